"""Task templates (SPEC section 3): executable Python files whose class
attributes are the defaults of the cloudtask command they behave as."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest
from tests.support.helpers import (
    assert_usage_error,
    counts,
    env_with,
    job_output,
    session_ids,
    sessions_dir,
    split_shown,
    summary,
    template,
)

from cloudtask.config import TemplateValues, check_combinations, resolve
from cloudtask.errors import UsageError
from cloudtask.template import Template


def write_template(path: Path, body: str, *, main: str | None = "Job") -> Path:
    """A template file: the import, the class body given, and CLASS.main()."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "from cloudtask import Task\n\n" + textwrap.dedent(body).strip() + "\n"
    if main:
        text += f"\n\n{main}.main()\n"
    path.write_text(text)
    return path


def simple(tmp_path: Path, *lines: str, command: str = '"echo"') -> Path:
    body = (
        "class Job(Task):\n"
        + f"    COMMAND = {command}\n"
        + "".join(f"    {line}\n" for line in lines)
    )
    return write_template(tmp_path / "task.py", body)


# -- attributes are defaults; precedence ----------------------------------------


def test_a_template_runs_its_command_with_its_defaults(tmp_path: Path) -> None:
    task = simple(tmp_path, "SPLIT = 2")

    result = template(task, input=b"1\n2\n3\n")

    assert result.returncode == 0, result.stderr
    assert sorted(job_output(result.stdout)) == ["1", "2", "3"]
    assert split_shown(result.stdout) == 2
    log = (sessions_dir() / str(summary(result).id) / "log").read_text()
    assert "split 2" in log
    assert counts(result) == (0, 3, 0, 0, 0, 3)


def test_the_command_line_overrides_the_template(tmp_path: Path) -> None:
    task = simple(tmp_path, "SPLIT = 2")

    result = template(task, "--split=3", input=b"1\n2\n3\n4\n")

    assert result.returncode == 0, result.stderr
    assert split_shown(result.stdout) == 3


def test_the_template_overrides_the_environment(tmp_path: Path) -> None:
    task = simple(tmp_path, "SPLIT = 2")

    result = template(task, input=b"1\n2\n3\n4\n", env=env_with(CLOUDTASK_SPLIT="3"))

    assert result.returncode == 0, result.stderr
    assert split_shown(result.stdout) == 2


def test_the_environment_fills_what_the_template_leaves_out(tmp_path: Path) -> None:
    task = simple(tmp_path, "RETRIES = 0")

    result = template(task, input=b"1\n2\n3\n4\n", env=env_with(CLOUDTASK_SPLIT="3"))

    assert result.returncode == 0, result.stderr
    assert split_shown(result.stdout) == 3


def test_a_template_timeout_beats_the_environment(tmp_path: Path) -> None:
    task = simple(tmp_path, "TIMEOUT = 0.5", command='"sleep"')

    result = template(task, input=b"5\n", env=env_with(CLOUDTASK_TIMEOUT="60"))

    assert result.returncode == 1
    assert counts(result) == (1, 1, 0, 1, 0, 0)


def test_the_command_line_timeout_beats_the_template(tmp_path: Path) -> None:
    task = simple(tmp_path, "TIMEOUT = 0.2", command='"sleep"')

    result = template(task, "--timeout=30", input=b"1\n")

    assert result.returncode == 0, result.stdout
    assert counts(result) == (0, 1, 0, 0, 0, 1)


def test_a_template_flag(tmp_path: Path) -> None:
    task = simple(tmp_path, "FORCE = True", "RETRIES = 1")

    result = template(task, input=b"a\n")

    assert result.returncode == 0, result.stderr


# -- inheritance ---------------------------------------------------------------


def test_templates_inherit_like_classes(tmp_path: Path) -> None:
    # The job sleeps as long as its argument says, then prints it.
    write_template(
        tmp_path / "base.py",
        """
        class Base(Task):
            COMMAND = ["sh", "-c", 'sleep "$0"; echo "[$0]"']
            SPLIT = 2
            TIMEOUT = 0.5

        if __name__ == "__main__":
            Base.main()
        """,
        main=None,
    )
    sub = tmp_path / "sub.py"
    sub.write_text("from base import Base\n\n\nclass Sub(Base):\n    SPLIT = 3\n\n\nSub.main()\n")

    result = template(sub, input=b"0\n0.1\n5\n")

    assert result.returncode == 1, result.stderr
    assert split_shown(result.stdout) == 3  # overridden
    assert sorted(job_output(result.stdout)) == ["[0.1]", "[0]"]  # COMMAND inherited
    assert counts(result) == (1, 3, 0, 1, 0, 2)  # TIMEOUT inherited


def test_a_subclass_can_unset_an_inherited_attribute(tmp_path: Path) -> None:
    write_template(
        tmp_path / "base.py",
        """
        class Base(Task):
            COMMAND = "echo"
            SPLIT = 2
        """,
        main=None,
    )
    sub = tmp_path / "sub.py"
    sub.write_text(
        "from base import Base\n\n\nclass Sub(Base):\n    SPLIT = None\n\n\nSub.main()\n"
    )

    result = template(sub, input=b"a\nb\nc\n", env=env_with(CLOUDTASK_SPLIT="3"))

    assert result.returncode == 0, result.stderr
    assert split_shown(result.stdout) == 3


# -- COMMAND and extra positional arguments --------------------------------------


def test_extra_positional_arguments_are_appended_to_the_command(tmp_path: Path) -> None:
    task = simple(tmp_path, command=repr("printf '[%s]\\n'"))

    result = template(task, "extra words", "more", input=b"x\n")

    assert result.returncode == 0, result.stderr
    assert job_output(result.stdout) == ["[extra words]", "[more]", "[x]"]


def test_options_before_the_extra_arguments_are_options(tmp_path: Path) -> None:
    task = simple(tmp_path, command=repr("printf '[%s]\\n'"))

    result = template(task, "--split=2", "word", "--split=3", input=b"x\ny\n")

    assert result.returncode == 0, result.stderr
    outputs = job_output(result.stdout)
    assert outputs.count("[--split=3]") == 2
    assert outputs.count("[word]") == 2
    assert "[--split=2]" not in outputs
    assert split_shown(result.stdout) == 2


def test_a_command_given_as_a_list_of_words_is_quoted(tmp_path: Path) -> None:
    command = ["printf", "<%s>\\n", "a b", "$HOME", "x|y", "it's"]
    task = simple(tmp_path, command=repr(command))

    result = template(task, input=b"c\n")

    assert result.returncode == 0, result.stderr
    assert job_output(result.stdout) == ["<a b>", "<$HOME>", "<x|y>", "<it's>", "<c>"]


def test_a_command_string_is_a_shell_string(tmp_path: Path) -> None:
    task = simple(tmp_path, command=repr("echo a | tr a b; echo"))

    result = template(task, input=b"c\n")

    assert job_output(result.stdout) == ["b", "c"]


def test_a_template_without_command_takes_it_from_the_command_line(tmp_path: Path) -> None:
    task = write_template(tmp_path / "task.py", "class Job(Task):\n    SPLIT = 2\n")

    result = template(task, "echo", "hi", input=b"a\n")

    assert result.returncode == 0, result.stderr
    assert job_output(result.stdout) == ["hi a"]


def test_a_template_without_command_and_none_given_is_a_usage_error(tmp_path: Path) -> None:
    task = write_template(tmp_path / "task.py", "class Job(Task):\n    SPLIT = 2\n")

    result = template(task, input=b"a\n")

    assert_usage_error(result, "no command", one_line=False)


@pytest.mark.parametrize("command", ["5", "''", "[]", "['echo', 1]"])
def test_a_bad_command_attribute_is_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    task = simple(tmp_path, command=command)

    result = template(task, input=b"a\n")

    assert_usage_error(result, "COMMAND")


# -- relative paths are beside the template -----------------------------------------


def test_a_relative_sessions_is_relative_to_the_template(tmp_path: Path) -> None:
    task = simple(tmp_path / "templates", 'SESSIONS = "runs"')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    result = template(task, input=b"a\n", cwd=elsewhere)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "templates" / "runs" / "1" / "log").is_file()
    assert not (elsewhere / "runs").exists()
    assert session_ids() == []


def test_a_relative_overlay_is_relative_to_the_template(tmp_path: Path) -> None:
    task = simple(tmp_path / "templates", 'OVERLAY = "missing-overlay"')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    result = template(task, input=b"a\n", cwd=elsewhere)

    assert_usage_error(result, "OVERLAY", str(tmp_path / "templates" / "missing-overlay"))


def load_template_class(path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> type:
    spec = importlib.util.spec_from_file_location(f"template_{name}_{id(path)}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return getattr(module, name)


def test_task_template_resolves_overlay_beside_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "templates"
    (folder / "overlay").mkdir(parents=True)
    path = write_template(
        folder / "task.py",
        """
        class Job(Task):
            COMMAND = "echo"
            OVERLAY = "overlay"
            SESSIONS = "runs"
            DESCRIPTION = "in process"
        """,
        main=None,
    )
    monkeypatch.chdir(tmp_path)
    job = load_template_class(path, "Job", monkeypatch)

    made = job.template()

    assert isinstance(made, Template)
    assert made.values.path == path.resolve()
    assert made.description == "in process"
    got = resolve({}, made.values, {})
    assert got.overlay == (folder / "overlay").resolve()
    assert got.sessions == (folder / "runs").resolve()
    with pytest.raises(UsageError, match="--overlay: the local provider does not copy"):
        check_combinations(got)


def test_task_template_values_are_the_class_attributes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_template(
        tmp_path / "task.py",
        """
        class Base(Task):
            SPLIT = 2
            RETRIES = 1

        class Job(Base):
            COMMAND = ["echo", "a b"]
            RETRIES = 4
            lowercase_helper = 7
        """,
        main=None,
    )
    job = load_template_class(path, "Job", monkeypatch)

    made = job.template()

    assert isinstance(made.values, TemplateValues)
    assert dict(made.values.values) == {"SPLIT": 2, "RETRIES": 4}
    assert made.command is not None
    assert made.command.for_job(["c"]) == "echo 'a b' c"


# -- bad templates: one line, exit 2 -------------------------------------------------


def test_an_unknown_attribute_suggests_the_close_name(tmp_path: Path) -> None:
    task = simple(tmp_path, "SPLTI = 2")

    result = template(task, input=b"a\n")

    assert_usage_error(result, "SPLTI", "SPLIT")
    assert "did you mean SPLIT" in result.stderr


def test_an_unknown_attribute_is_refused_even_for_help(tmp_path: Path) -> None:
    task = simple(tmp_path, "TIMEOUTT = 2")

    result = template(task, "--help", input=None)

    assert_usage_error(result, "TIMEOUTT", "TIMEOUT")


@pytest.mark.parametrize(
    ("line", "attribute"),
    [
        ("SPLIT = -1", "SPLIT"),
        ("SPLIT = 'many'", "SPLIT"),
        ("TIMEOUT = -1", "TIMEOUT"),
        ("KEEPALIVE = 0", "KEEPALIVE"),
        ("TIMEOUT = float('nan')", "TIMEOUT"),
        ("RETRIES = -2", "RETRIES"),
        ("STRIKES = True", "STRIKES"),
        ("FORCE = 'yes'", "FORCE"),
        ("PROVIDER = 'cloud9'", "PROVIDER"),
    ],
)
def test_a_bad_attribute_value_names_the_template_attribute(
    tmp_path: Path, line: str, attribute: str
) -> None:
    marker = tmp_path / "ran"
    task = simple(tmp_path, line, command=repr(f"touch {marker}"))

    result = template(task, input=b"a\n")

    assert_usage_error(result, f"template attribute {attribute}")
    assert not marker.exists()
    assert session_ids() == []


def test_a_bad_attribute_value_is_fine_when_the_command_line_overrides_it(
    tmp_path: Path,
) -> None:
    task = simple(tmp_path, "SPLIT = -1")

    result = template(task, "--split=1", input=b"a\n")

    assert result.returncode == 0, result.stderr


def test_a_bad_report_attribute_is_refused_naming_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    task = simple(tmp_path, "REPORT = 'mail: ct@example.com'", command=repr(f"touch {marker}"))

    result = template(task, input=b"a\n")

    assert_usage_error(result, "template attribute REPORT")
    assert not marker.exists()


def test_a_template_provider_without_its_options_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    task = simple(tmp_path, "PROVIDER = 'ec2'", command=repr(f"touch {marker}"))

    result = template(task, input=b"a\n")

    assert_usage_error(result, "--ami-id")
    assert not marker.exists()


# -- --help ------------------------------------------------------------------------------


def test_a_description_that_is_not_a_string_is_refused_even_for_help(tmp_path: Path) -> None:
    task = simple(tmp_path, "DESCRIPTION = 5")

    result = template(task, "--help", input=None)

    assert_usage_error(result, "DESCRIPTION", "expected a string, got 5")


def test_template_help_shows_the_templates_own_values(tmp_path: Path) -> None:
    task = simple(tmp_path, "SPLIT = 7", "HUB_APIKEY = 'sekrit-key'")

    result = template(task, "--help", input=None)

    assert result.returncode == 0, result.stderr
    shown = result.stdout.split("--split=N\n", 1)[1].splitlines()[1]
    assert shown.strip() == (
        "this template: 7 (the command line overrides it, CLOUDTASK_SPLIT does not)"
    )
    assert "this template: (set)" in result.stdout
    assert "sekrit" not in result.stdout
    timeout = result.stdout.split("--timeout=DURATION\n", 1)[1].splitlines()[1]
    assert "default: 3600" in timeout  # not set by the template: the built-in default


def test_a_secret_of_the_wrong_type_is_refused_without_showing_it(tmp_path: Path) -> None:
    task = simple(tmp_path, "HUB_APIKEY = b'sk-SUPERSECRET-123'")

    result = template(task, input=b"1\n")

    err = assert_usage_error(result, "HUB_APIKEY", "unsupported type bytes")
    assert "SUPERSECRET" not in err


@pytest.mark.parametrize("attribute", ["JOBLOG", "SESSIONS", "PRE"])
def test_a_nul_byte_in_a_template_value_is_refused(tmp_path: Path, attribute: str) -> None:
    task = simple(tmp_path, f"{attribute} = 'a\\0b'")

    result = template(task, input=b"1\n")

    assert_usage_error(result, attribute, "NUL byte")


def test_template_help_shows_the_description(tmp_path: Path) -> None:
    task = simple(tmp_path, 'DESCRIPTION = "refresh the security updates of every ISO"')

    result = template(task, "--help", input=None)

    assert result.returncode == 0, result.stderr
    assert "refresh the security updates of every ISO" in result.stdout
    assert "--split" in result.stdout and "CLOUDTASK_SPLIT" in result.stdout
    first = result.stdout.splitlines()[0]
    assert first.startswith("usage: task.py")
    assert "COMMAND" not in first
    assert session_ids() == []
