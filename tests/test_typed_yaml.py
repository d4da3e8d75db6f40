"""The generic typed-YAML engine on a toy schema: shared fields with other defaults, rules, and a
library check's ArgumentError turned into a ConfigError naming the config key."""
from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass

import pytest

from pipeline.arguments import ArgumentError
from pipeline.typed_yaml import ConfigError, Fail, build, load, setting, with_defaults


@dataclass(frozen=True)
class Optimiser:
    lr: float = setting(0.1, gt=0, le=1.0)
    steps: int = setting(10, ge=1)


@dataclass(frozen=True)
class Student(with_defaults(Optimiser, lr=0.5)):
    width: int = setting(4, ge=1)


@dataclass(frozen=True)
class Root:
    teacher: Optimiser = setting(Optimiser())
    student: Student = setting(Student())


def split_evenly(total: int, parts: int) -> None:
    """A library check: plain arguments, ArgumentError naming the one at fault."""
    if total % parts:
        raise ArgumentError("total", total, f"does not split over `parts` = {parts}")


def student_rule(root: Root, fail: Fail) -> None:
    with fail.naming(total="student.steps", parts="student.width"):
        split_evenly(root.student.steps, root.student.width)


def test_with_defaults_keeps_type_bounds_and_order_but_not_defaults():
    assert Student().lr == 0.5 and Optimiser().lr == 0.1
    assert [f.name for f in dataclasses.fields(Student)] == ["lr", "steps", "width"]
    with pytest.raises(ConfigError, match=r"student.lr = 2.0: must be at most 1.0"):
        build(Root, {"student": {"lr": 2}})
    with pytest.raises(ConfigError, match=r"student.lr = 'x': expected a number"):
        build(Root, {"student": {"lr": "x"}})
    assert pickle.loads(pickle.dumps(Student(lr=0.25))) == Student(lr=0.25)
    with pytest.raises(TypeError, match="no field"):
        with_defaults(Optimiser, momentum=0.9)


def test_a_library_check_names_the_config_key_value_and_origin(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("student:\n  steps: 12\n")
    assert load(Root, path, rules=[student_rule]).student.steps == 12
    with pytest.raises(ConfigError) as info:
        load(Root, path, ["student.width=5"], rules=[student_rule])
    assert str(info.value) == f"{path}: student.steps = 12: does not split over student.width = 5"
    assert info.value.key == "student.steps" and info.value.value == 12


def test_outside_a_config_the_error_names_the_argument():
    with pytest.raises(ArgumentError, match=r"^total=12: does not split over parts = 5$"):
        split_evenly(12, 5)


def test_an_indexed_argument_keeps_its_index_and_an_unnamed_one_is_not_hidden():
    def rule(root, fail):
        with fail.naming(item="teacher.steps"):
            raise ArgumentError("item[3]", 7, "too big")

    with pytest.raises(ConfigError, match=r"<dict>: teacher.steps\[3\] = 7: too big"):
        build(Root, {}, rules=[rule])

    def unnamed(root, fail):
        with fail.naming(other="teacher.steps"):
            split_evenly(3, 2)

    with pytest.raises(ArgumentError):  # a rule that names the wrong arguments is a bug, not a config error
        build(Root, {}, rules=[unnamed])


def test_rules_run_in_order_after_every_field_passed():
    seen = []
    build(Root, {"teacher": {"steps": 3}}, rules=[lambda r, f: seen.append(("a", r.teacher.steps)),
                                                   lambda r, f: seen.append(("b", r.student.lr))])
    assert seen == [("a", 3), ("b", 0.5)]
