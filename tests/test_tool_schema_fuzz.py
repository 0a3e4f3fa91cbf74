"""Hypothesis: the schema a function tool shows the model and the validation it applies agree.

For random annotations (primitives, enums, Literal, lists, tuples, dicts, Optional, unions, attrs
classes, nested), every JSON value is either valid for the derived JSON Schema *and* structured
by the converter, or refused by both; values generated to fit are accepted and round-trip.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Literal, Optional, Union

import attrs
import pytest

hypothesis = pytest.importorskip("hypothesis")
jsonschema = pytest.importorskip("jsonschema")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from asm_kernel.errors import ToolArgumentsError  # noqa: E402
from asm_kernel.tools import schema_for  # noqa: E402
from asm_kernel.tools.arguments import converter, structure_arguments  # noqa: E402
from asm_kernel.tools.schema import Parameter  # noqa: E402


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


LEAVES: list[Any] = [str, int, float, bool, Color, Level, Literal["a", "b", 3], Any]
_made = 0


def _attrs_class(children: list[tuple[Any, bool]]) -> type:
    global _made
    _made += 1
    fields = {}
    for i, (tp, optional) in enumerate(children):
        fields[f"f{i}"] = attrs.field(type=tp, default=None) if optional else attrs.field(type=tp)
    # Required fields first: attrs refuses a mandatory field after a defaulted one.
    ordered = dict(sorted(fields.items(), key=lambda kv: kv[1]._default is not attrs.NOTHING))
    return attrs.make_class(f"Made{_made}", ordered, frozen=True)


annotations = st.recursive(
    st.sampled_from(LEAVES),
    lambda inner: st.one_of(
        inner.map(lambda t: list[t]),  # type: ignore[valid-type]
        inner.map(lambda t: tuple[t, ...]),  # type: ignore[valid-type]
        st.tuples(inner, inner).map(lambda ts: tuple[ts[0], ts[1]]),  # type: ignore[valid-type]
        inner.map(lambda t: dict[str, t]),  # type: ignore[valid-type]
        inner.map(lambda t: Optional[t]),  # noqa: UP045
        st.tuples(inner, inner).map(lambda ts: Union[ts[0], ts[1]]),  # noqa: UP007
        st.lists(st.tuples(inner, st.booleans()), min_size=1, max_size=3).map(_attrs_class),
    ),
    max_leaves=6,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5) | st.sampled_from(["red", "blue", "a", "b", 1, 2, 3]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["f0", "f1", "f2", "x"]), inner,
                                                                max_size=3),
    max_leaves=8,
)


def fitting(tp: Any) -> st.SearchStrategy[Any]:
    """JSON values that fit ``tp``."""
    from typing import get_args, get_origin

    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return json_values
    if tp is type(None):
        return st.none()
    if tp is str:
        return st.text(max_size=8)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-(2**40), 2**40)
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(-100, 100)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from([m.value for m in tp])
    if origin is Literal:
        return st.sampled_from(args)
    if origin is Union:
        return st.one_of(*(fitting(a) for a in args))
    if origin is list or (origin is tuple and Ellipsis in args):
        return st.lists(fitting(args[0]), max_size=3)
    if origin is tuple:
        return st.tuples(*(fitting(a) for a in args)).map(list)
    if origin is dict:
        return st.dictionaries(st.text(max_size=4), fitting(args[1]), max_size=3)
    if attrs.has(tp):
        required = {f.name: fitting(f.type) for f in attrs.fields(tp) if f.default is attrs.NOTHING}
        optional = {f.name: fitting(f.type) for f in attrs.fields(tp) if f.default is not attrs.NOTHING}
        return st.fixed_dictionaries(required, optional=optional)
    raise AssertionError(tp)


def accepted(tp: Any, value: Any) -> bool:
    try:
        converter().structure(value, tp)
    except Exception:
        return False
    return True


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.data())
def test_fitting_values_are_valid_for_the_schema_and_accepted(data: st.DataObject) -> None:
    tp = data.draw(annotations)
    schema = schema_for(tp)
    jsonschema.Draft202012Validator.check_schema(schema)
    value = data.draw(fitting(tp))
    jsonschema.validate(value, schema, cls=jsonschema.Draft202012Validator)
    assert accepted(tp, value), (tp, value)


@FUZZ
@given(st.data())
def test_schema_and_validation_agree_on_any_json_value(data: st.DataObject) -> None:
    tp = data.draw(annotations)
    schema = schema_for(tp)
    value = data.draw(json_values | fitting(tp))
    valid = jsonschema.Draft202012Validator(schema).is_valid(value)
    assert valid == accepted(tp, value), (tp, value, schema)


@FUZZ
@given(st.data())
def test_a_refused_argument_is_reported_with_its_path(data: st.DataObject) -> None:
    tp = data.draw(annotations)
    value = data.draw(json_values)
    params = [Parameter("arg", tp)]
    try:
        structure_arguments("t", params, {"arg": value})
    except ToolArgumentsError as exc:
        assert not accepted(tp, value)
        problems = exc.details["problems"].split("; ")
        assert problems and all(p.startswith("arg") for p in problems), problems
        json.dumps(exc.to_dict())  # what the model and the log get is plain JSON
    else:
        assert accepted(tp, value)
