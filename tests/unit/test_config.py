"""The option table and config.resolve (SPEC section 3).

One table, OPTIONS, gives every option its flag, environment variable,
template attribute and default; resolve() applies the precedence
command line > template > environment > default and validates every value.
"""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path

import asyncssh
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudtask.addresses import Address
from cloudtask.cli.exits import Program, exit_status
from cloudtask.config import (
    BY_ATTR,
    BY_NAME,
    OPTIONS,
    Config,
    TemplateValues,
    check_combinations,
    config_field_names,
    resolve,
)
from cloudtask.errors import ExitStatus, UsageError
from cloudtask.providers import Instance, ProviderUnavailable, get_cloud, provider_names
from cloudtask.providers.local import LocalProvider

# -- the table and the Config dataclass agree ---------------------------------


def test_every_option_has_a_config_field_and_every_field_an_option() -> None:
    assert {option.attr.lower() for option in OPTIONS} == config_field_names()


def test_names_are_derived_the_same_way_for_every_option() -> None:
    for option in OPTIONS:
        assert option.flag_name == "--" + option.name
        assert option.attr == option.name.upper().replace("-", "_")
        assert option.env == "CLOUDTASK_" + option.attr
    assert BY_NAME["ssh-identity"].env == "CLOUDTASK_SSH_IDENTITY"
    assert BY_NAME["hub-apikey"].attr == "HUB_APIKEY"


def test_option_names_are_unique() -> None:
    names = [option.name for option in OPTIONS]
    assert len(names) == len(set(names))
    assert len(BY_ATTR) == len(OPTIONS)


def test_the_spec_options_are_all_there() -> None:
    spec = {
        "split", "workers", "timeout", "retries", "strikes", "user", "pre", "post",
        "overlay", "ssh-identity", "sessions", "resume", "retry", "force", "report",
        "provider", "hub-apikey", "hub-url", "backup-id", "snapshot-id", "ami-id",
        "ec2-region", "ec2-size", "ec2-type", "joblog", "halt", "budget",
    }  # fmt: skip
    assert spec <= set(BY_NAME)


def test_config_defaults_are_the_table_defaults() -> None:
    empty = Config()
    for option in OPTIONS:
        if option.default is not None:
            assert empty.value(option) == option.default, option.name


def test_resolve_with_nothing_gives_the_spec_defaults() -> None:
    got = resolve({}, None, {})

    assert got.split is None
    assert got.timeout == 3600
    assert got.retries == 0
    assert got.strikes == 0
    assert got.user == "root"
    assert got.force is False
    assert got.provider == "local"
    assert got.sessions == Path("~/.cloudtask").expanduser()
    assert got.pre is None and got.post is None and got.workers is None
    assert dict(got.sources) == {}


def test_resolve_reads_os_environ_when_no_environ_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDTASK_RETRIES", "4")

    assert resolve({}).retries == 4


# -- precedence: command line > template > environment > default --------------

# For a few options: a value for each of the three sources, all different.
TIERS = {
    "split": ("2", 3, "4"),
    "timeout": ("1.5", 2.5, "3.5"),
    "retries": ("1", 2, "3"),
    "strikes": ("1", 2, "3"),
    "pre": ("cli-pre", "template-pre", "env-pre"),
    "post": ("cli-post", "template-post", "env-post"),
}
PARSED = {
    "split": (2, 3, 4),
    "timeout": (1.5, 2.5, 3.5),
    "retries": (1, 2, 3),
    "strikes": (1, 2, 3),
    "pre": ("cli-pre", "template-pre", "env-pre"),
    "post": ("cli-post", "template-post", "env-post"),
}
SOURCES = ("command line", "template", "environment")


def resolve_from(name: str, present: set[str]) -> Config:
    option = BY_NAME[name]
    cli_value, template_value, env_value = TIERS[name]
    cli = {name: cli_value} if "command line" in present else {}
    template = TemplateValues(
        {option.attr: template_value} if "template" in present else {}, Path("/t/template.py")
    )
    environ = {option.env: env_value} if "environment" in present else {}
    return resolve(cli, template, environ)


@pytest.mark.parametrize("name", TIERS)
@pytest.mark.parametrize(
    ("present", "winner"),
    [
        ({"command line", "template"}, "command line"),
        ({"command line", "environment"}, "command line"),
        ({"command line"}, "command line"),
        ({"template", "environment"}, "template"),
        ({"template"}, "template"),
        ({"environment"}, "environment"),
        ({"command line", "template", "environment"}, "command line"),
    ],
    ids=lambda value: "+".join(sorted(value)) if isinstance(value, set) else value,
)
def test_precedence_pairs(name: str, present: set[str], winner: str) -> None:
    got = resolve_from(name, present)

    assert getattr(got, BY_NAME[name].attr.lower()) == PARSED[name][SOURCES.index(winner)]
    assert got.sources[name] == winner


@pytest.mark.parametrize("name", TIERS)
def test_default_is_the_lowest(name: str) -> None:
    got = resolve_from(name, set())
    option = BY_NAME[name]

    assert getattr(got, option.attr.lower()) == option.default
    assert name not in got.sources


@given(
    present=st.sets(st.sampled_from(SOURCES)),
    name=st.sampled_from(sorted(TIERS)),
)
def test_precedence_for_any_combination(present: set[str], name: str) -> None:
    got = resolve_from(name, present)
    option = BY_NAME[name]

    winners = [source for source in SOURCES if source in present]
    expected = PARSED[name][SOURCES.index(winners[0])] if winners else option.default
    assert getattr(got, option.attr.lower()) == expected
    assert got.sources.get(name, "default") == (winners[0] if winners else "default")


def test_a_bad_value_in_a_lower_tier_is_not_looked_at() -> None:
    # The command line wins, so the environment's value is never parsed.
    got = resolve({"split": "2"}, None, {"CLOUDTASK_SPLIT": "garbage"})

    assert got.split == 2


def test_the_template_hides_a_bad_environment_value() -> None:
    got = resolve({}, TemplateValues({"SPLIT": 3}, None), {"CLOUDTASK_SPLIT": "-5"})

    assert got.split == 3


def test_flags_from_every_source() -> None:
    assert resolve({"force": True}, None, {}).force is True
    assert resolve({}, TemplateValues({"FORCE": True}, None), {}).force is True
    assert resolve({}, TemplateValues({"FORCE": False}, None), {"CLOUDTASK_FORCE": "1"}).force is (
        False
    )
    assert resolve({"force": True}, TemplateValues({"FORCE": False}, None), {}).force is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("no", False),
     ("false", False), ("", False), ("off", False)],
)  # fmt: skip
def test_flag_values_in_the_environment(text: str, expected: bool) -> None:
    assert resolve({}, None, {"CLOUDTASK_FORCE": text}).force is expected


# -- bad values: a UsageError naming where the value came from -----------------

BAD_VALUES = [
    ("split", "-1"),
    ("split", "0"),
    ("split", "abc"),
    ("split", "1.5"),
    ("split", ""),
    ("timeout", "abc"),
    ("timeout", "-1"),
    ("timeout", "-0.5s"),
    ("keepalive", "0"),
    ("connect-timeout", "0m"),
    ("timeout", "inf"),
    ("timeout", "-inf"),
    ("timeout", "nan"),
    ("timeout", ""),
    ("retries", "-1"),
    ("retries", "one"),
    ("strikes", "-1"),
    ("strikes", "2.0"),
    ("provider", "nope"),
    ("provider", ""),
    ("workers", "/nonexistent/workers"),
    ("workers", " , "),
    ("ssh-identity", "/nonexistent/id_rsa"),
    ("overlay", "/nonexistent/overlay"),
    ("halt", "bogus"),
    ("halt", "fail=0"),
    ("halt", "fail=101%"),
    ("halt", "fail=-1"),
    ("budget", "-5"),
    ("budget", "free"),
    ("resume", "0"),
    ("retry", "x"),
    ("pre", "   "),
]
BAD_IDS = [f"{name}={value!r}" for name, value in BAD_VALUES]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=BAD_IDS)
def test_a_bad_command_line_value_names_the_flag(name: str, value: str) -> None:
    with pytest.raises(UsageError) as caught:
        resolve({name: value}, None, {})

    message = str(caught.value)
    assert message.startswith(f"--{name}: "), message
    assert "\n" not in message
    assert exit_status(Program.CLOUDTASK, caught.value) == ExitStatus.USAGE == 2


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=BAD_IDS)
def test_a_bad_environment_value_names_the_variable(name: str, value: str) -> None:
    option = BY_NAME[name]
    with pytest.raises(UsageError) as caught:
        resolve({}, None, {option.env: value})

    message = str(caught.value)
    assert message.startswith(f"{option.env}: "), message
    assert "\n" not in message


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=BAD_IDS)
def test_a_bad_template_value_names_the_attribute(name: str, value: str) -> None:
    option = BY_NAME[name]
    with pytest.raises(UsageError) as caught:
        resolve({}, TemplateValues({option.attr: value}, Path("/t/task.py")), {})

    message = str(caught.value)
    assert message.startswith(f"template attribute {option.attr}"), message
    assert "/t/task.py" in message
    assert "\n" not in message


def test_an_unknown_provider_lists_the_valid_names() -> None:
    with pytest.raises(UsageError) as caught:
        resolve({"provider": "hubb"}, None, {})

    assert set(provider_names()) >= {"local", "hub", "ec2", "libcloud"}
    for name in provider_names():
        assert name in str(caught.value)


@pytest.mark.parametrize("value", ["yes", 1, "1", "True"])
def test_a_template_flag_must_be_a_bool(value: object) -> None:
    with pytest.raises(UsageError, match="template attribute FORCE"):
        resolve({}, TemplateValues({"FORCE": value}, None), {})


@pytest.mark.parametrize("value", [True, False, None, {"a": 1}, [1, 2], object()])
def test_a_template_value_of_the_wrong_type_is_refused(value: object) -> None:
    with pytest.raises(UsageError, match="template attribute SPLIT"):
        resolve({}, TemplateValues({"SPLIT": value}, None), {})


def test_a_template_list_of_workers_is_accepted() -> None:
    got = resolve({}, TemplateValues({"WORKERS": ["a", "b@c:22"]}, None), {})

    assert got.workers == (Address("a"), Address("c", "b", 22))


def test_an_environment_flag_that_is_not_a_boolean_is_refused() -> None:
    with pytest.raises(UsageError, match="CLOUDTASK_FORCE"):
        resolve({}, None, {"CLOUDTASK_FORCE": "maybe"})


def test_values_are_parsed_to_their_types(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    got = resolve(
        {
            "split": " 7 ",
            "timeout": "0.25",
            "retries": "0",
            "strikes": "3",
            "ssh-identity": str(key),
            "overlay": str(tmp_path),
            "halt": "fail=10%",
            "budget": "$12.5",
            "sessions": str(tmp_path / "s"),
        },
        None,
        {},
    )

    assert got.split == 7
    assert got.timeout == 0.25
    assert got.retries == 0 and got.strikes == 3
    assert got.ssh_identity == key
    assert got.overlay == tmp_path
    assert got.halt == "fail=10%"
    assert math.isclose(got.budget or 0, 12.5)
    assert got.sessions == tmp_path / "s"


def test_workers_file_or_addresses(tmp_path: Path) -> None:
    listing = tmp_path / "workers.txt"
    listing.write_text("host1\nhost2\n")

    assert resolve({"workers": str(listing)}, None, {}).workers == (
        Address("host1"),
        Address("host2"),
    )
    assert resolve({"workers": "a, b c"}, None, {}).workers == (
        Address("a"),
        Address("b"),
        Address("c"),
    )


@pytest.mark.parametrize("text", ["0", "0s", "0m", " 0h ", "0.0", "no limit", "No Limit"])
def test_a_timeout_of_0_is_no_limit_shown_and_read_back_as_such(text: str) -> None:
    config = resolve({"timeout": text}, None, {})

    assert config.timeout is None
    rows = {name: (value, source) for name, value, source in config.shown()}
    assert rows["timeout"] == ("no limit", "command line")
    stored = TemplateValues({"TIMEOUT": rows["timeout"][0]}, None, stored_in=Path("store"))
    assert resolve({}, stored, {}).timeout is None  # a resume keeps it


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1.5", 1.5)],
)
def test_durations_take_a_unit(text: str, expected: float) -> None:
    for name in ("timeout", "keepalive", "connect-timeout", "boot-timeout"):
        assert resolve({name: text}, None, {}).value(BY_NAME[name]) == expected


def test_no_timeout_given_is_the_default_hour_not_no_limit() -> None:
    config = resolve({}, None, {})

    assert config.timeout == 3600.0
    assert ("timeout", "3600.0", "default") in config.shown()


# -- template paths -------------------------------------------------------------


def test_relative_sessions_in_a_template_is_beside_the_template() -> None:
    got = resolve({}, TemplateValues({"SESSIONS": "runs"}, Path("/t/dir/task.py")), {})

    assert got.sessions == Path("/t/dir/runs")


def test_relative_overlay_in_a_template_is_beside_the_template(tmp_path: Path) -> None:
    (tmp_path / "overlay").mkdir()
    template = TemplateValues({"OVERLAY": "overlay"}, tmp_path / "task.py")

    got = resolve({}, template, {})

    assert got.overlay == tmp_path / "overlay"


def test_absolute_sessions_in_a_template_stays(tmp_path: Path) -> None:
    got = resolve({}, TemplateValues({"SESSIONS": str(tmp_path)}, Path("/t/task.py")), {})

    assert got.sessions == tmp_path


def test_relative_sessions_elsewhere_is_not_moved() -> None:
    assert resolve({"sessions": "runs"}, None, {}).sessions == Path("runs")
    assert resolve({}, None, {"CLOUDTASK_SESSIONS": "runs"}).sessions == Path("runs")


def test_a_relative_path_only_on_relative_to_template_options() -> None:
    got = resolve({}, TemplateValues({"PRE": "setup.sh"}, Path("/t/task.py")), {})

    assert got.pre == "setup.sh"


# -- options not available yet --------------------------------------------------


def test_options_that_are_built_pass_check_combinations(tmp_path: Path) -> None:
    got = resolve(
        {
            "split": "2",
            "timeout": "5",
            "retries": "1",
            "strikes": "1",
            "pre": "true",
            "post": "true",
            "sessions": str(tmp_path),
            "force": True,
            "provider": "local",
        },
        None,
        {},
    )

    check_combinations(got)  # nothing raised


def test_an_unknown_cloud_is_a_usage_error_naming_the_valid_ones() -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        get_cloud("hubb")

    assert isinstance(caught.value, UsageError)
    assert "valid: ec2, hub, libcloud, local" in str(caught.value)


def test_provider_defaults_to_hub_when_a_hub_api_key_is_set() -> None:
    assert resolve({}, None, {"CLOUDTASK_HUB_APIKEY": "k"}).provider == "hub"
    assert resolve({"hub-apikey": "k"}, None, {}).provider == "hub"
    assert resolve({"hub-apikey": "k", "provider": "local"}, None, {}).provider == "local"
    assert "provider" not in resolve({}, None, {"CLOUDTASK_HUB_APIKEY": "k"}).sources


# -- shown(): the confirmation table, secrets masked -------------------------------


def test_shown_masks_secrets_and_names_sources() -> None:
    got = resolve(
        {"split": "2", "hub-apikey": "sekrit-key"},
        TemplateValues({"RETRIES": 3}, None),
        {"CLOUDTASK_STRIKES": "4", "CLOUDTASK_HUB_URL": "http://hub.example/"},
    )

    rows = {name: (value, source) for name, value, source in got.shown()}

    assert rows["split"] == ("2", "command line")
    assert rows["retries"] == ("3", "template")
    assert rows["strikes"] == ("4", "environment")
    assert rows["timeout"] == ("3600.0", "default")
    assert rows["hub-apikey"][1] == "command line"
    assert "sekrit" not in rows["hub-apikey"][0]
    assert all("sekrit" not in value for _, value, _ in got.shown())
    assert rows["hub-url"] == ("http://hub.example/", "environment")


def test_shown_masks_a_secret_from_the_environment() -> None:
    got = resolve({}, None, {"CLOUDTASK_HUB_APIKEY": "env-sekrit"})

    shown = got.shown()

    assert any(name == "hub-apikey" for name, _, _ in shown)
    assert all("env-sekrit" not in value for _, value, _ in shown)


def test_shown_leaves_out_unset_options() -> None:
    names = [name for name, _, _ in resolve({}, None, {}).shown()]

    assert "pre" not in names
    assert "force" not in names
    assert "hub-apikey" not in names
    assert "timeout" in names


def test_every_secret_option_is_masked() -> None:
    secrets = [option for option in OPTIONS if option.secret]
    assert secrets, "no secret options at all"
    got = resolve({option.name: "s3cr3t-value" for option in secrets}, None, {})

    assert all("s3cr3t-value" not in value for _, value, _ in got.shown())


# -- secrets are not passed to jobs ------------------------------------------------


def test_local_jobs_do_not_get_the_hub_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDTASK_HUB_APIKEY", "sekrit-key")
    monkeypatch.setenv("SOME_OTHER_VARIABLE", "kept")
    provider = LocalProvider.from_config(resolve({}, None, {}))

    assert "CLOUDTASK_HUB_APIKEY" not in provider.environ
    assert provider.environ["SOME_OTHER_VARIABLE"] == "kept"
    assert provider.environ["PATH"] == os.environ["PATH"]


def test_a_local_job_cannot_see_the_hub_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDTASK_HUB_APIKEY", "sekrit-key")
    provider = LocalProvider.from_config(resolve({}, None, {}))
    chunks: list[bytes] = []

    async def go() -> None:
        transport = await provider.connect(Instance("local-1", "local1", "localhost"))
        try:
            result = await transport.run(
                'echo "key=${CLOUDTASK_HUB_APIKEY-unset}"', timeout=10, output=chunks.append
            )
        finally:
            await transport.close()
        assert result.ok

    asyncio.run(go())

    assert b"".join(chunks) == b"key=unset\n"


def test_every_secret_is_hidden_from_local_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in OPTIONS:
        if option.secret:
            monkeypatch.setenv(option.env, "sekrit")
    provider = LocalProvider.from_config(resolve({}, None, {}))

    assert "sekrit" not in provider.environ.values()


def test_a_third_party_cloud_comes_in_through_an_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cloudtask.providers import registry
    from cloudtask.providers.hub import HubCloud

    plugins = {"mycloud": "cloudtask.providers.hub:HubCloud", "broken": "no.such.module:X"}
    monkeypatch.setattr(registry, "_plugins", lambda: plugins)

    assert "mycloud" in provider_names()
    assert resolve({"provider": "mycloud"}, None, {}).provider == "mycloud"
    assert get_cloud("mycloud") is HubCloud
    with pytest.raises(
        ProviderUnavailable, match=r"--provider=broken: cannot load no\.such\.module"
    ):
        get_cloud("broken")


def test_the_secret_options_are_those_hidden_from_child_processes() -> None:
    from cloudtask.environment import SECRET_NAMES

    secret = {option.name for option in OPTIONS if option.secret}
    assert secret == {"hub-apikey", "libcloud-key", "libcloud-secret", "libcloud-options"}
    assert {f"CLOUDTASK_{name.upper().replace('-', '_')}" for name in secret} < SECRET_NAMES
    assert "CLOUDTASK_SMTP_PASSWORD" in SECRET_NAMES


# -- input modes: --lines and --null (issue 13) ----------------------------------


def test_lines_and_null_from_one_layer_are_refused() -> None:
    with pytest.raises(UsageError, match=r"^--lines and --null \(command line\): give one"):
        resolve({"lines": True, "null": True}, None, {})
    with pytest.raises(UsageError, match=r"^--lines and --null \(environment\): give one"):
        resolve({}, None, {"CLOUDTASK_LINES": "1", "CLOUDTASK_NULL": "yes"})


@pytest.mark.parametrize(
    ("cli", "template", "environ", "lines", "null"),
    [
        ({"null": True}, {"LINES": True}, {}, False, True),
        ({"lines": True}, {}, {"CLOUDTASK_NULL": "1"}, True, False),
        ({}, {"NULL": True}, {"CLOUDTASK_LINES": "1"}, False, True),
        ({}, {"NULL": False}, {"CLOUDTASK_LINES": "1"}, True, False),
    ],
)
def test_lines_and_null_from_two_layers_the_higher_one_wins(
    cli: dict[str, str | bool],
    template: dict[str, object],
    environ: dict[str, str],
    lines: bool,
    null: bool,
) -> None:
    got = resolve(cli, TemplateValues(template, None), environ)
    assert (got.lines, got.null) == (lines, null)
    shown = {name for name, _, _ in got.shown()}
    assert ("lines" in shown, "null" in shown) == (lines, null)


def test_replace_takes_any_non_empty_text() -> None:
    assert resolve({"replace": "{}"}, None, {}).replace == "{}"
    assert resolve({}, None, {"CLOUDTASK_REPLACE": "@@"}).replace == "@@"
    with pytest.raises(UsageError, match=r"^--replace: must not be empty"):
        resolve({"replace": " "}, None, {})
