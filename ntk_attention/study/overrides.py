"""Typed settings from text: one field of a config, named by a dotted path, set from a string.

What turns a command line's text into config values, converted by the field's type hint
(`int`, `float`, `str`, `bool`, `Optional[...]`, `Tuple[X, ...]` from 'a,b,c'):

  reproduce's flags      --n_grid=25,50 -> Study.n_grid = (25, 50)         (`convert`)
  reproduce's --set      --set=malleability.setup.attack.pgd_steps=40      (`parse_set`, `apply`)

A path walks nested configs (dataclasses and NamedTuples alike: `study.configs`,
`training.TrainConfig`, `malleability.Setup`, `attacks.AttackConfig`). A bad path or value is
a ValueError of one line naming what was given.
"""
import dataclasses
import typing
from typing import Any, Dict, List, Sequence, Tuple

_TRUE = ('true', '1', 'yes', 'on')
_FALSE = ('false', '0', 'no', 'off')


def fields(cls) -> Dict[str, Any]:
  """{name: type hint} of a dataclass or NamedTuple class, in declaration order."""
  hints = typing.get_type_hints(cls)
  names = ([f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls)
           else list(cls._fields))
  return {n: hints[n] for n in names}


def is_group(hint) -> bool:
  """A nested config (dataclass or NamedTuple) rather than one value."""
  return isinstance(hint, type) and (dataclasses.is_dataclass(hint) or hasattr(hint, '_fields'))


def convert(hint, text: str, what: str, sep: str = ','):
  """`text` as a value of type `hint`; `sep` separates the items of a tuple. ValueError
  naming `what` when it is not one."""
  text = str(text).strip()
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin is typing.Union and type(None) in args:        # Optional[X]: '' or 'none' = None
    if text.lower() in ('', 'none'):
      return None
    hint = next(a for a in args if a is not type(None))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (tuple, Tuple):
    return tuple(convert(args[0], item, what) for item in text.split(sep) if item.strip())
  if hint is bool:
    if text.lower() not in _TRUE + _FALSE:
      raise ValueError(f'{what} takes true or false, got {text!r}.')
    return text.lower() in _TRUE
  if hint in (int, float):
    try:
      return hint(text)
    except ValueError:
      raise ValueError(f'{what} takes {"an integer" if hint is int else "a number"}, '
                       f'got {text!r}.') from None
  if hint is str:
    return text
  raise ValueError(f'{what} cannot be set from text (type {hint}).')


def _replace(config, **changes):
  return (dataclasses.replace(config, **changes) if dataclasses.is_dataclass(config)
          else config._replace(**changes))


def apply(config, path: Sequence[str], text: str, what: str):
  """`config` with the field at `path` (names into nested configs) set from `text`."""
  types = fields(type(config))
  name = path[0]
  if name not in types:
    raise ValueError(f'{what}: {type(config).__name__} has no field {name!r} '
                     f'(fields: {", ".join(types)}).')
  if len(path) > 1:
    if not is_group(types[name]):
      raise ValueError(f'{what}: {name!r} is a value, not a group of fields.')
    return _replace(config, **{name: apply(getattr(config, name), path[1:], text, what)})
  if is_group(types[name]):
    raise ValueError(f'{what}: {name!r} is a group of fields; set one of them '
                     f'({", ".join(fields(types[name]))}).')
  return _replace(config, **{name: convert(types[name], text, what)})


def parse_set(items: Sequence[str], configs: Dict[str, type]) -> List[Tuple[str, tuple, str]]:
  """`--set` items 'KIND.FIELD[.FIELD...]=VALUE' -> [(kind, path, value text)], each tried
  on `configs[kind]()` (the kind's default config) so that a bad path or value is refused
  before any work, as one line naming the item."""
  out = []
  for item in items:
    what = f'--set={item}'
    target, sep, text = item.partition('=')
    kind, _, rest = target.strip().partition('.')
    if not sep or not rest:
      raise ValueError(f'{what}: expected KIND.FIELD=VALUE, e.g. '
                       'malleability.setup.attack.pgd_steps=40.')
    if kind not in configs:
      raise ValueError(f'{what}: unknown kind {kind!r}; choose from {tuple(configs)}.')
    path = tuple(rest.split('.'))
    apply(configs[kind](), path, text, what)
    out.append((kind, path, text))
  return out


__all__ = ['fields', 'is_group', 'convert', 'apply', 'parse_set']
