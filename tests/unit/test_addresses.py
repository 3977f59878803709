"""Worker addresses (--workers): parsing, files and lists, and the CLI's usage errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tests.support import helpers

from cloudtask.addresses import Address, parse_address, read_addresses

CLOUDTASK = str(Path(sys.executable).with_name("cloudtask"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("root@198.18.0.2:2222", Address("198.18.0.2", "root", 2222)),
        ("198.18.0.2", Address("198.18.0.2")),
        ("198.18.0.2:22", Address("198.18.0.2", None, 22)),
        ("admin@198.18.0.2", Address("198.18.0.2", "admin")),
        ("[2001:db8::1]:2200", Address("2001:db8::1", None, 2200)),
        ("[2001:db8::1]", Address("2001:db8::1")),
        ("user@[::1]:22", Address("::1", "user", 22)),
        ("2001:db8::1", Address("2001:db8::1")),
        ("fe80::1%eth0", Address("fe80::1%eth0")),
        ("worker-1.example.com", Address("worker-1.example.com")),
        ("my_alias", Address("my_alias")),
        ("deploy@build.example.com:2022", Address("build.example.com", "deploy", 2022)),
        ("a", Address("a")),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "address",
    [
        Address("198.18.0.2", "root", 2222),
        Address("2001:db8::1", "u", 22),
        Address("2001:db8::1"),
        Address("host.example"),
    ],
)
def test_str_parses_back(address: Address) -> None:
    assert parse_address(str(address)) == address


def test_label_names_the_port_only_when_not_22() -> None:
    assert Address("10.0.0.1", "root", 22).label == "10.0.0.1"
    assert Address("10.0.0.1", port=2222).label == "10.0.0.1:2222"
    assert Address("web-1.example", "deploy", 22).label == "web-1.example"
    assert Address("2001:db8::1").label == "2001:db8::1"
    assert Address("2001:db8::1", port=2222).label == "[2001:db8::1]:2222"


@pytest.mark.parametrize(
    "text",
    [
        "host:0",
        "host:65536",
        "host:port",
        "host:",
        "@host",
        "bad user@host",
        "ho st",
        "host!",
        "-host",
        "[2001:db8::1",
        "[2001:db8::1]2200",
        "[2001:db8::1]:",
        "[not-ipv6]:22",
        "[198.18.0.2]:22",
        "zz::1::2",
        "",
        "user@",
    ],
)
def test_bad_address_raises_value_error_naming_it(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_address(text)
    assert repr(text) in str(raised.value)


def test_read_addresses_list_with_spaces_and_commas() -> None:
    got = read_addresses("root@10.0.0.1:2222, 10.0.0.2,[::1]:22  host-a\tb.example,,")
    assert got == [
        Address("10.0.0.1", "root", 2222),
        Address("10.0.0.2"),
        Address("::1", None, 22),
        Address("host-a"),
        Address("b.example"),
    ]


def test_read_addresses_file_with_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "workers"
    path.write_text(
        "# my workers\n"
        "\n"
        "root@10.0.0.1   # the first\n"
        "   \n"
        "10.0.0.2 [2001:db8::5]:2200\n"
        "#10.0.0.9\n"
        "host-c\n"
    )
    assert read_addresses(str(path)) == [
        Address("10.0.0.1", "root"),
        Address("10.0.0.2"),
        Address("2001:db8::5", None, 2200),
        Address("host-c"),
    ]


def test_read_addresses_same_address_twice_is_kept_twice() -> None:
    assert read_addresses("a a,a") == [Address("a")] * 3


def test_bad_line_in_file_names_file_line_and_item(tmp_path: Path) -> None:
    path = tmp_path / "workers"
    path.write_text("10.0.0.1\n# fine\nhost:99999\n")
    with pytest.raises(ValueError) as raised:
        read_addresses(str(path))
    message = str(raised.value)
    assert str(path) in message and "line 3" in message and "'host:99999'" in message


def test_bad_item_in_list_is_named() -> None:
    with pytest.raises(ValueError, match="'bad!host'"):
        read_addresses("10.0.0.1, bad!host")


@pytest.mark.parametrize("value", ["", " , ,"])
def test_empty_list_raises(value: str) -> None:
    with pytest.raises(ValueError):
        read_addresses(value)


def test_file_with_only_comments_raises(tmp_path: Path) -> None:
    path = tmp_path / "workers"
    path.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no worker addresses"):
        read_addresses(str(path))


# --- the command line: usage errors before anything runs ------------------------------------


def _refused(tmp_path: Path, *options: str, needles: tuple[str, ...]) -> None:
    marker = tmp_path / "ran"
    result = helpers.run(
        [CLOUDTASK, "--force", *options, "sh", "-c", f"echo ran >> {marker}"],
        input=b"1\n2\n",
        env=helpers.env_with(HOME=str(tmp_path)),
        timeout=30,
    )
    helpers.assert_usage_error(result, *needles)
    assert not marker.exists()
    assert helpers.session_ids() == []


def test_cli_bad_address(tmp_path: Path) -> None:
    _refused(tmp_path, "--workers=10.0.0.1,root@host:99999", needles=("--workers", "host:99999"))


def test_cli_bad_address_in_file(tmp_path: Path) -> None:
    workers = tmp_path / "workers"
    workers.write_text("10.0.0.1\n[::1\n")
    _refused(tmp_path, f"--workers={workers}", needles=("line 2", "[::1"))


def test_cli_missing_workers_file(tmp_path: Path) -> None:
    _refused(tmp_path, f"--workers={tmp_path}/nope/workers", needles=("no such file",))


def test_cli_missing_identity_file(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_key"
    _refused(
        tmp_path,
        "--workers=127.0.0.1",
        f"--ssh-identity={missing}",
        needles=("--ssh-identity", str(missing)),
    )


def test_cli_unknown_host_names_leave_no_worker(tmp_path: Path) -> None:
    # (One unknown name among known ones only leaves its worker out: see
    # tests/integration/test_ssh_workers.py.)
    _refused(
        tmp_path,
        "--workers=root@no-such-host.invalid:2222 other-host.invalid",
        needles=("unknown host", "'no-such-host.invalid', 'other-host.invalid'", "no worker"),
    )


def test_cli_a_lone_unknown_word_may_be_a_mistyped_file(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "--workers=my-workers.invalid",
        needles=("no file named 'my-workers.invalid' and no host by that name",),
    )


@pytest.mark.parametrize("separator", [" ", ",", "\n"])
def test_a_list_longer_than_a_file_name_is_a_list(separator: str) -> None:
    addresses = [f"root@198.19.{n // 250}.{n % 250 + 1}:2322" for n in range(50)]
    value = separator.join(addresses)
    assert len(value) > 255  # the longest file name Linux takes
    assert [str(address) for address in read_addresses(value)] == addresses


def test_a_file_with_fifty_addresses_is_read(tmp_path: Path) -> None:
    addresses = [f"deploy@198.19.0.{n + 1}:2222" for n in range(50)]
    listing = tmp_path / "workers"
    listing.write_text("\n".join(addresses) + "\n")
    assert [str(address) for address in read_addresses(str(listing))] == addresses
