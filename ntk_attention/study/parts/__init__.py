"""The study's parts: one module per part, each the library call behind one script.

Contract (every module here, e.g. `study.parts.malleability`):

  run(config, out_dir, context=None, resume=False) -> summary
      Computes the part for `config` (a `study.configs` dataclass) and writes its JSON, CSV,
      tables and figures into `out_dir`; `context` is a `Context` (the shared trainer and a
      progress hook) when a reproduction runs it, None when a script does; `resume` skips
      records already in the part's JSONL.
  check(config) -> None
      Validates the config without loading data: a ValueError whose one line names the field.
  data_needs(config) -> list of `Need`
      Every load the part makes, tried before any work (`check_pools`).
"""
