"""The study pipeline: the reproduction of arXiv 2603.13085 on top of the core.

It imports the core (`ntk_attention`), never the other way round, and it alone imports
matplotlib and markdown-it (in `report`). Modules:

  paper        the study's published numbers, dataset and model display names (one source)
  configs      typed configs of the parts (each part takes one)
  presets      `Study` (every setting of a reproduction) and the presets, as values
  pipeline     a `Study` as its parts: [Part(sub, kind, config)]
  runner       runs the parts (checks first, markers, resume, one process) and the report
  layout       the run folder's paths (the runner writes them, the report reads them)
  overrides    typed values from text: flags and --set=KIND.FIELD=VALUE
  parts        one module per part: run(config, out_dir, context), check, data_needs
  store        atomic JSON / CSV / npz / text files, the resumable JSONL store
  progress     progress lines (done, time per item, time left)
  cache        the training cache shared by a reproduction's parts (docs/method.md §16)
  plan         the cost of a config, the time estimate, the run's progress line
  sensitivity  one unpublished choice varied at a time, bootstrap ratios (docs/method.md §12)
  scaling      malleability against the number of training points n (docs/method.md §15)
  scorecard    the verdict per claim, read off the parts' numbers
  report       sections, figures and the single-file HTML page
"""
