"""Destination policy (spec §16, F-134 .. F-139, F-228, F-230) and its IPv6-spelling extension."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aero_relay.core.policy import (
    CIDR_DENIED,
    CIDR_NOT_ALLOWED,
    DEFAULT_DENY,
    INVALID_IP,
    PORT_DENIED,
    PORT_NOT_ALLOWED,
    PORT_ZERO,
    PRIVATE,
    Cidr,
    DestinationPolicy,
    PolicyError,
    PortRange,
    parse_destination_policy,
)

M32 = 0xFFFF_FFFF

# F-138, written out here so that removing a range from the code fails a test.
ORIGINAL_V4 = [
    "127.0.0.0/8",
    "169.254.0.0/16",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "224.0.0.0/4",
    "0.0.0.0/8",
    "240.0.0.0/4",
    "255.255.255.255/32",
]
ORIGINAL_V6 = ["::1/128", "fe80::/10", "fc00::/7", "ff00::/8", "::/128"]
# 192.0.0.0/24 without the globally reachable anycast 192.0.0.9 and 192.0.0.10, then the rest.
EXTRA_V4 = ["192.0.0.0/29", "192.0.0.8/32", "192.0.0.11/32", "192.0.0.12/30", "192.0.0.16/28"]
EXTRA_V4 += ["192.0.0.32/27", "192.0.0.64/26", "192.0.0.128/25"]
EXTRA_V4 += ["192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24"]
EXTRA_V6 = ["64:ff9b:1::/48", "100::/64", "2001:2::/48", "2001:10::/28", "2001:db8::/32", "3fff::/20"]
EXTRA_V6 += ["5f00::/16", "fec0::/10"]

PUBLIC_V4 = "8.8.8.8"
PUBLIC_V6 = "2606:4700:4700::1111"
TEREDO_SERVER = "65.54.227.120"  # public


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def v6(value: int) -> bytes:
    return value.to_bytes(16, "big")


def open_but_private_denied() -> DestinationPolicy:
    """Everything allowed except the built-in special ranges."""
    return attrs.evolve(DestinationPolicy.dev(), allow_private_networks=False)


# IPv6 spellings of an IPv4 address (as integers).
def mapped(v4: int) -> int:
    return (0xFFFF << 32) | v4


def compat(v4: int) -> int:
    return v4


def translated(v4: int) -> int:
    return (0xFFFF_0000 << 32) | v4


def nat64(v4: int) -> int:
    return (0x0064_FF9B << 96) | v4


def six_to_four(v4: int, low80: int = 0x1234_0000_0000_0000_0001) -> int:
    return (0x2002 << 112) | (v4 << 80) | low80


def teredo(server: int, client: int, flags_port: int = 0x8000_63BF) -> int:
    return (0x2001_0000 << 96) | (server << 64) | (flags_port << 32) | (client ^ M32)


def v4int(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


# --- parsing: presets (F-134) ---------------------------------------------------------------------


def test_empty_env_is_the_prod_preset() -> None:
    """F-134: no preset variable means prod: deny by default, private networks denied."""
    assert parse_destination_policy({}) == DestinationPolicy.prod()
    assert DestinationPolicy.prod() == DestinationPolicy(
        preset="prod", default_allow=False, allow_private_networks=False
    )


@pytest.mark.parametrize("value", ["", "prod", "production", "  PROD ", "Production", "\t\n"])
def test_prod_preset_spellings(value: str) -> None:
    """F-134: trimmed, case-insensitive; empty counts as prod."""
    assert parse_destination_policy({"DESTINATION_POLICY_PRESET": value}).preset == "prod"


@pytest.mark.parametrize("value", ["dev", "development", " DEV ", "Development"])
def test_dev_preset_spellings(value: str) -> None:
    policy = parse_destination_policy({"DESTINATION_POLICY_PRESET": value})
    assert policy == DestinationPolicy.dev()
    assert (policy.preset, policy.default_allow, policy.allow_private_networks) == ("dev", True, True)


def test_primary_preset_variable_wins_over_aliases() -> None:
    env = {"DESTINATION_POLICY_PRESET": "dev", "UDP_DESTINATION_POLICY_PRESET": "prod", "POLICY_PRESET": "x"}
    assert parse_destination_policy(env).preset == "dev"


def test_present_but_empty_primary_hides_the_aliases() -> None:
    """F-134/F-215: the first *present* variable decides, even when it is empty."""
    env = {"DESTINATION_POLICY_PRESET": "", "UDP_DESTINATION_POLICY_PRESET": "dev", "POLICY_PRESET": "dev"}
    assert parse_destination_policy(env).preset == "prod"


def test_e2e_style_env_with_empty_aliases_is_dev() -> None:
    """F-215: the e2e harness sets the primary to dev and the aliases to empty."""
    env = {"DESTINATION_POLICY_PRESET": "dev", "UDP_DESTINATION_POLICY_PRESET": "", "POLICY_PRESET": ""}
    assert parse_destination_policy(env).preset == "dev"


def test_udp_alias_wins_over_policy_preset_alias() -> None:
    env = {"UDP_DESTINATION_POLICY_PRESET": "dev", "POLICY_PRESET": "prod"}
    assert parse_destination_policy(env).preset == "dev"


def test_policy_preset_alias_alone_is_used() -> None:
    assert parse_destination_policy({"POLICY_PRESET": "development"}).preset == "dev"


def test_unknown_preset_error_quotes_the_trimmed_lowercased_value() -> None:
    with pytest.raises(PolicyError) as exc:
        parse_destination_policy({"DESTINATION_POLICY_PRESET": " Staging "})
    assert str(exc.value) == 'destination policy: unknown DESTINATION_POLICY_PRESET "staging"'


def test_unknown_preset_in_an_alias_still_names_the_primary_variable() -> None:
    with pytest.raises(PolicyError, match=r'^destination policy: unknown DESTINATION_POLICY_PRESET "x\\ty"$'):
        parse_destination_policy({"POLICY_PRESET": "X\tY"})


def test_trimming_uses_go_white_space() -> None:
    """strings.TrimSpace trims U+3000 but not the ASCII separators U+001C..U+001F (Python's strip does)."""
    assert parse_destination_policy({"DESTINATION_POLICY_PRESET": "\u3000dev\x85"}).preset == "dev"
    with pytest.raises(PolicyError, match=r'PRESET "\\x1cdev"$'):
        parse_destination_policy({"DESTINATION_POLICY_PRESET": "\x1cdev"})


def test_policy_error_is_a_value_error() -> None:
    assert issubclass(PolicyError, ValueError)


# --- parsing: ALLOW_PRIVATE_NETWORKS (F-135) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("t", True),
        ("TRUE", True),
        (" True ", True),
        ("0", False),
        ("F", False),
        ("false", False),
    ],
)
def test_allow_private_networks_uses_parse_bool_after_trimming(value: str, expected: bool) -> None:
    env = {"DESTINATION_POLICY_PRESET": "dev", "ALLOW_PRIVATE_NETWORKS": value}
    assert parse_destination_policy(env).allow_private_networks is expected


def test_allow_private_networks_overrides_only_that_flag() -> None:
    """F-135: default_allow stays the preset's."""
    prod = parse_destination_policy({"ALLOW_PRIVATE_NETWORKS": "true"})
    assert (prod.preset, prod.default_allow, prod.allow_private_networks) == ("prod", False, True)
    dev = parse_destination_policy({"DESTINATION_POLICY_PRESET": "dev", "ALLOW_PRIVATE_NETWORKS": "0"})
    assert (dev.preset, dev.default_allow, dev.allow_private_networks) == ("dev", True, False)


@pytest.mark.parametrize(("value", "quoted"), [("yes", '"yes"'), (" on ", '" on "'), ("tRuE", '"tRuE"')])
def test_invalid_allow_private_networks_error_quotes_the_raw_value(value: str, quoted: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_destination_policy({"ALLOW_PRIVATE_NETWORKS": value})
    assert str(exc.value) == f"destination policy: invalid ALLOW_PRIVATE_NETWORKS {quoted}"


@pytest.mark.parametrize("preset", ["prod", "dev"])
@pytest.mark.parametrize("value", ["", "   "])
def test_blank_allow_private_networks_means_unset(preset: str, value: str) -> None:
    """Deliberate fix of weakness 10: the original is fatal here; every other blank variable is unset."""
    env = {"DESTINATION_POLICY_PRESET": preset, "ALLOW_PRIVATE_NETWORKS": value}
    assert parse_destination_policy(env) == parse_destination_policy({"DESTINATION_POLICY_PRESET": preset})


# --- parsing: CIDR lists (F-136) -----------------------------------------------------------------------


def test_cidr_lists_are_trimmed_and_skip_empty_entries() -> None:
    env = {"ALLOW_UDP_CIDRS": " 8.8.8.0/24 , ,::/0,", "DENY_UDP_CIDRS": "\t1.1.1.1/32\n"}
    policy = parse_destination_policy(env)
    assert [c.text for c in policy.allow_cidrs] == ["8.8.8.0/24", "::/0"]
    assert [c.text for c in policy.deny_cidrs] == ["1.1.1.1/32"]


@pytest.mark.parametrize("name", ["ALLOW_UDP_CIDRS", "DENY_UDP_CIDRS", "ALLOW_UDP_PORTS", "DENY_UDP_PORTS"])
@pytest.mark.parametrize("value", ["", " ", " , ,"])
def test_blank_lists_are_unset(name: str, value: str) -> None:
    assert parse_destination_policy({name: value}) == DestinationPolicy.prod()


def test_bare_ip_is_not_a_cidr() -> None:
    """F-136: like Go net.ParseCIDR."""
    with pytest.raises(PolicyError) as exc:
        parse_destination_policy({"ALLOW_UDP_CIDRS": "8.8.8.0/24, 10.0.0.1"})
    assert str(exc.value) == (
        'destination policy: invalid ALLOW_UDP_CIDRS: parse CIDR "10.0.0.1": invalid CIDR address: 10.0.0.1'
    )


def test_deny_cidr_error_names_deny_udp_cidrs() -> None:
    with pytest.raises(PolicyError) as exc:
        parse_destination_policy({"DENY_UDP_CIDRS": "::1"})
    assert (
        str(exc.value)
        == 'destination policy: invalid DENY_UDP_CIDRS: parse CIDR "::1": invalid CIDR address: ::1'
    )


@pytest.mark.parametrize(
    "text",
    [
        "1.2.3.4/33",
        "::/129",
        "01.2.3.4/8",  # Go rejects leading zeros in IPv4
        "fe80::1%eth0/64",  # zones are rejected
        "1.2.3.4/+8",
        "1.2.3.4/-1",
        "1.2.3.4/",
        "/8",
        "1.2.3/8",
        "example.com/8",
        "1.2.3.4/8/8",
        "1.2.3.4/8 ",
        "1.2.3.4/٨",  # non-ASCII digit
        "1.2.3.4/0000000000000000000000000033",
    ],
)
def test_invalid_cidrs(text: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid CIDR address: "):
        Cidr.parse(text)


def test_cidr_host_bits_are_masked_and_prefix_may_have_leading_zeros() -> None:
    cidr = Cidr.parse("10.1.2.3/008")
    assert (cidr.network, cidr.prefixlen) == (Cidr.parse("10.0.0.0/8").network, 96 + 8)
    assert Cidr.parse("2001:db8::1/32").network == int(ipaddress.IPv6Address("2001:db8::"))


# --- parsing: port lists (F-136) -----------------------------------------------------------------------


def test_port_lists_accept_ports_and_ranges() -> None:
    policy = parse_destination_policy(
        {"ALLOW_UDP_PORTS": "53, 123,30000-30100, 7 - 9", "DENY_UDP_PORTS": "+1"}
    )
    assert policy.allow_ports == (
        PortRange(53, 53),
        PortRange(123, 123),
        PortRange(30000, 30100),
        PortRange(7, 9),
    )
    assert policy.deny_ports == (PortRange(1, 1),)  # Atoi accepts a sign


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("0", "port 0 out of range"),
        ("65536", "port 65536 out of range"),
        ("+0", "port 0 out of range"),
        ("abc", 'invalid port "abc"'),
        ("5x", 'invalid port "5x"'),
        ("99999999999999999999", 'invalid port "99999999999999999999"'),
        ("-5", "empty port"),
        ("5-", "empty port"),
        ("10-5", 'invalid port range "10-5": start > end'),
        ("1-2-3", 'invalid port "2-3"'),
        ("53,1-70000", "port 70000 out of range"),
    ],
)
def test_port_list_errors(value: str, detail: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_destination_policy({"ALLOW_UDP_PORTS": value})
    assert str(exc.value) == f"destination policy: invalid ALLOW_UDP_PORTS: {detail}"


def test_deny_port_error_names_deny_udp_ports() -> None:
    with pytest.raises(PolicyError, match=r"^destination policy: invalid DENY_UDP_PORTS: empty port$"):
        parse_destination_policy({"DENY_UDP_PORTS": "-"})


def test_errors_are_reported_in_the_original_order() -> None:
    env = {"DENY_UDP_PORTS": "x", "ALLOW_UDP_CIDRS": "x", "ALLOW_PRIVATE_NETWORKS": "x", "POLICY_PRESET": "x"}
    with pytest.raises(PolicyError, match="PRESET"):
        parse_destination_policy(env)
    del env["POLICY_PRESET"]
    with pytest.raises(PolicyError, match="ALLOW_PRIVATE_NETWORKS"):
        parse_destination_policy(env)
    del env["ALLOW_PRIVATE_NETWORKS"]
    with pytest.raises(PolicyError, match="ALLOW_UDP_CIDRS"):
        parse_destination_policy(env)


# --- evaluation order and ports (F-137, F-228) ---------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        DestinationPolicy.prod(),
        DestinationPolicy.dev(),
        parse_destination_policy({"ALLOW_UDP_CIDRS": "::/0", "ALLOW_UDP_PORTS": "1-65535"}),
    ],
)
def test_port_zero_is_always_denied(policy: DestinationPolicy) -> None:
    """F-228."""
    assert policy.check(ip(PUBLIC_V4), 0) == PORT_ZERO
    assert policy.check(ip(PUBLIC_V6), 0) == PORT_ZERO


def test_deny_port_overrides_allow_port() -> None:
    policy = attrs.evolve(
        DestinationPolicy.dev(), allow_ports=(PortRange(53, 53),), deny_ports=(PortRange(53, 53),)
    )
    assert policy.check(ip(PUBLIC_V4), 53) == PORT_DENIED


def test_allow_port_list_excludes_other_ports() -> None:
    policy = attrs.evolve(DestinationPolicy.dev(), allow_ports=(PortRange(53, 53), PortRange(100, 200)))
    assert policy.check(ip(PUBLIC_V4), 53) is None
    assert policy.check(ip(PUBLIC_V4), 100) is None
    assert policy.check(ip(PUBLIC_V4), 200) is None
    assert policy.check(ip(PUBLIC_V4), 54) == PORT_NOT_ALLOWED
    assert policy.check(ip(PUBLIC_V4), 201) == PORT_NOT_ALLOWED


def test_port_checks_come_before_address_checks() -> None:
    policy = parse_destination_policy({"DENY_UDP_PORTS": "53", "ALLOW_UDP_PORTS": "1-100"})
    assert policy.check(ip("10.0.0.1"), 53) == PORT_DENIED
    assert policy.check(ip("10.0.0.1"), 65535) == PORT_NOT_ALLOWED
    assert policy.check(ip("10.0.0.1"), 54) == PRIVATE


def test_prod_default_denies_every_destination() -> None:
    """F-137: prod without ALLOW_UDP_CIDRS denies everything."""
    policy = parse_destination_policy({})
    assert policy.check(ip(PUBLIC_V4), 53) == DEFAULT_DENY
    assert policy.check(ip(PUBLIC_V6), 53) == DEFAULT_DENY
    assert policy.check(ip("10.0.0.1"), 53) == PRIVATE


def test_dev_default_allows() -> None:
    assert DestinationPolicy.dev().check(ip(PUBLIC_V4), 53) is None
    assert DestinationPolicy.dev().check(ip(PUBLIC_V6), 53) is None


def test_private_networks_toggle() -> None:
    policy = open_but_private_denied()
    assert policy.check(ip("10.0.0.1"), 53) == PRIVATE
    assert attrs.evolve(policy, allow_private_networks=True).check(ip("10.0.0.1"), 53) is None


def test_builtin_ranges_come_before_the_allow_list() -> None:
    policy = parse_destination_policy({"ALLOW_UDP_CIDRS": "10.0.0.0/8"})
    assert policy.check(ip("10.0.0.1"), 53) == PRIVATE
    policy = parse_destination_policy({"ALLOW_UDP_CIDRS": "10.0.0.0/8", "ALLOW_PRIVATE_NETWORKS": "1"})
    assert policy.check(ip("10.0.0.1"), 53) is None


def test_cidr_deny_overrides_allow() -> None:
    policy = parse_destination_policy({"ALLOW_UDP_CIDRS": "1.1.1.0/24", "DENY_UDP_CIDRS": "1.1.1.1/32"})
    assert policy.check(ip("1.1.1.1"), 53) == CIDR_DENIED
    assert policy.check(ip("1.1.1.2"), 53) is None


def test_allow_list_only_mode() -> None:
    policy = parse_destination_policy({"DESTINATION_POLICY_PRESET": "dev", "ALLOW_UDP_CIDRS": "8.8.8.0/24"})
    assert policy.check(ip("8.8.8.8"), 53) is None
    assert policy.check(ip("1.1.1.1"), 53) == CIDR_NOT_ALLOWED


def test_ipv6_allow_and_deny_lists() -> None:
    env = {
        "DESTINATION_POLICY_PRESET": "dev",
        "ALLOW_UDP_CIDRS": "2001:db8::/32",
        "DENY_UDP_CIDRS": "2001:db8::1/128",
    }
    policy = parse_destination_policy(env)
    assert policy.check(ip("2001:db8::1"), 53) == CIDR_DENIED
    assert policy.check(ip("2001:db8::2"), 53) is None
    assert policy.check(ip("2001:db9::1"), 53) == CIDR_NOT_ALLOWED


@pytest.mark.parametrize("length", [0, 1, 3, 5, 15, 17, 32])
def test_address_of_wrong_length_is_denied_not_raised(length: int) -> None:
    assert DestinationPolicy.dev().check(b"\x08" * length, 53) == INVALID_IP


# --- CIDR matching (F-139) ----------------------------------------------------------------------------


def test_ipv6_any_in_deny_list_matches_ipv4() -> None:
    """F-139: IPv6 networks are matched against the 16-byte form."""
    policy = parse_destination_policy({"DESTINATION_POLICY_PRESET": "dev", "DENY_UDP_CIDRS": "::/0"})
    assert policy.check(ip(PUBLIC_V4), 53) == CIDR_DENIED
    assert policy.check(ip(PUBLIC_V6), 53) == CIDR_DENIED


def test_mapped_prefix_in_allow_list_matches_ipv4_only() -> None:
    policy = parse_destination_policy({"ALLOW_UDP_CIDRS": "::ffff:0:0/96"})
    assert policy.check(ip(PUBLIC_V4), 53) is None
    assert policy.check(ip(PUBLIC_V6), 53) == CIDR_NOT_ALLOWED


def test_ipv4_network_never_matches_ipv6() -> None:
    policy = parse_destination_policy({"ALLOW_UDP_CIDRS": "0.0.0.0/0"})
    assert policy.check(ip(PUBLIC_V4), 53) is None
    assert policy.check(ip(PUBLIC_V6), 53) == CIDR_NOT_ALLOWED


def test_ipv4_network_matches_the_mapped_spelling() -> None:
    policy = parse_destination_policy({"ALLOW_UDP_CIDRS": "8.8.8.0/24"})
    assert policy.check(ip("::ffff:8.8.8.8"), 53) is None


def test_mapped_cidr_is_an_ipv6_cidr_over_the_mapped_block() -> None:
    policy = parse_destination_policy({"ALLOW_UDP_CIDRS": "::ffff:8.8.0.0/112"})
    assert policy.check(ip("8.8.4.4"), 53) is None
    assert policy.check(ip("8.9.0.1"), 53) == CIDR_NOT_ALLOWED


# --- built-in ranges (F-138, plus the deliberate extension) ----------------------------------------


@pytest.mark.parametrize("cidr", ORIGINAL_V4 + EXTRA_V4 + ORIGINAL_V6 + EXTRA_V6)
def test_builtin_range_is_denied_at_both_ends(cidr: str) -> None:
    net = ipaddress.ip_network(cidr)
    policy = open_but_private_denied()
    assert policy.check(net.network_address.packed, 53) == PRIVATE
    assert policy.check(net.broadcast_address.packed, 53) == PRIVATE


@pytest.mark.parametrize("cidr", ORIGINAL_V4 + ORIGINAL_V6 + EXTRA_V4 + EXTRA_V6)
def test_builtin_range_is_allowed_when_private_networks_are(cidr: str) -> None:
    net = ipaddress.ip_network(cidr)
    assert DestinationPolicy.dev().check(net.network_address.packed, 53) is None


@pytest.mark.parametrize("text", ["0.0.0.0", "0.255.255.255", "255.255.255.255"])
def test_dev_allows_this_network_and_broadcast(text: str) -> None:
    """F-230: 0.0.0.0/8 and 255.255.255.255 are denied only when private networks are denied."""
    assert DestinationPolicy.dev().check(ip(text), 53) is None
    assert open_but_private_denied().check(ip(text), 53) == PRIVATE


@pytest.mark.parametrize("text", ["192.0.0.9", "192.0.0.10"])
def test_globally_reachable_anycast_in_192_0_0_0_24_is_not_special(text: str) -> None:
    assert open_but_private_denied().check(ip(text), 53) is None


PUBLIC_NEIGHBOURS = [
    *(PUBLIC_V4, "1.1.1.1", "9.255.255.255", "11.0.0.0", "172.15.255.255", "172.32.0.0", "100.63.255.255"),
    *("100.128.0.0", "223.255.255.255", "198.17.255.255", "198.20.0.0", "192.0.1.255", "192.0.3.0"),
    *(PUBLIC_V6, "::2:0:0:1", "fe7f:ffff::", "fbff::1", "2001:db9::", "2001:1::1", "3fff:1000::", "5eff::1"),
    *("101::", "100:0:0:1::"),
]


@pytest.mark.parametrize("text", PUBLIC_NEIGHBOURS)
def test_public_neighbours_of_builtin_ranges_are_allowed(text: str) -> None:
    assert open_but_private_denied().check(ip(text), 53) is None


def test_ipv4_mapped_loopback_is_denied() -> None:
    """F-137: the mapped form is normalised to IPv4 before the built-in check."""
    policy = open_but_private_denied()
    assert policy.check(ip("::ffff:127.0.0.1"), 53) == PRIVATE
    assert policy.check(ip("::ffff:8.8.8.8"), 53) is None


# --- IPv6 spellings of IPv4 (deliberate extension) -------------------------------------------------


SPELLINGS: dict[str, Callable[[int], int]] = {
    "mapped": mapped,
    "compat": compat,
    "translated": translated,
    "nat64": nat64,
    "6to4": six_to_four,
    "teredo_client": lambda v4: teredo(v4int(TEREDO_SERVER), v4),
    "teredo_server": lambda v4: teredo(v4, v4int("8.8.4.4")),
}


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("private", ["10.1.2.3", "127.0.0.1", "169.254.169.254", "192.168.1.1", "100.64.0.1"])
def test_ipv6_spelling_of_private_ipv4_is_denied(spelling: str, private: str) -> None:
    addr = v6(SPELLINGS[spelling](v4int(private)))
    assert open_but_private_denied().check(addr, 53) == PRIVATE


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_ipv6_spelling_of_public_ipv4_is_allowed(spelling: str) -> None:
    addr = v6(SPELLINGS[spelling](v4int("8.8.8.8")))
    assert open_but_private_denied().check(addr, 53) is None


def test_spelling_helpers_agree_with_the_stdlib() -> None:
    v4 = ipaddress.IPv4Address("192.168.1.1")
    assert ipaddress.IPv6Address(six_to_four(int(v4))).sixtofour == v4
    assert ipaddress.IPv6Address(teredo(v4int(TEREDO_SERVER), int(v4))).teredo == (
        ipaddress.IPv4Address(TEREDO_SERVER),
        v4,
    )
    assert ipaddress.IPv6Address(nat64(int(v4))) == ipaddress.IPv6Address("64:ff9b::192.168.1.1")
    assert ipaddress.IPv6Address(mapped(int(v4))).ipv4_mapped == v4


def test_teredo_rfc_example_is_judged_by_its_client() -> None:
    """RFC 4380's example: server 65.54.227.120, client 192.0.2.45 (documentation, special)."""
    assert open_but_private_denied().check(ip("2001:0:4136:e378:8000:63bf:3fff:fdd2"), 53) == PRIVATE


def test_local_use_nat64_prefix_is_denied_whole() -> None:
    policy = open_but_private_denied()
    assert policy.check(ip("64:ff9b:1::808:808"), 53) == PRIVATE
    assert policy.check(ip("64:ff9b:1:ffff:ffff:ffff:ffff:ffff"), 53) == PRIVATE


def test_deny_list_matches_embedded_ipv4() -> None:
    policy = parse_destination_policy(
        {"DESTINATION_POLICY_PRESET": "dev", "DENY_UDP_CIDRS": "203.0.113.0/24"}
    )
    assert policy.check(ip("203.0.113.7"), 53) == CIDR_DENIED
    assert policy.check(v6(nat64(v4int("203.0.113.7"))), 53) == CIDR_DENIED
    assert policy.check(v6(six_to_four(v4int("203.0.113.7"))), 53) == CIDR_DENIED
    assert policy.check(v6(teredo(v4int(TEREDO_SERVER), v4int("203.0.113.7"))), 53) == CIDR_DENIED
    assert policy.check(v6(nat64(v4int("203.0.114.7"))), 53) is None


def test_allow_list_matches_only_the_literal_address() -> None:
    policy = parse_destination_policy({"ALLOW_UDP_CIDRS": "8.8.8.0/24"})
    assert policy.check(ip("8.8.8.8"), 53) is None
    assert policy.check(v6(nat64(v4int("8.8.8.8"))), 53) == CIDR_NOT_ALLOWED
    policy = parse_destination_policy({"ALLOW_UDP_CIDRS": "64:ff9b::/96"})
    assert policy.check(v6(nat64(v4int("8.8.8.8"))), 53) is None
    assert policy.check(v6(nat64(v4int("10.0.0.1"))), 53) == PRIVATE


# --- properties --------------------------------------------------------------------------------------

POLICIES = [
    DestinationPolicy.prod(),
    DestinationPolicy.dev(),
    open_but_private_denied(),
    parse_destination_policy(
        {
            "ALLOW_UDP_CIDRS": "8.8.8.0/24,2000::/3,::ffff:0:0/96",
            "DENY_UDP_CIDRS": "1.0.0.0/8,2002::/16",
            "ALLOW_UDP_PORTS": "1-1000,5000",
            "DENY_UDP_PORTS": "22",
        }
    ),
]


@given(
    policy=st.sampled_from(POLICIES),
    addr=st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16)),
    port=st.integers(0, 65535),
)
def test_check_never_raises(policy: DestinationPolicy, addr: bytes, port: int) -> None:
    result = policy.check(addr, port)
    assert result is None or isinstance(result, str)


_PRIVATE_V4_NETS = [ipaddress.IPv4Network(c) for c in ORIGINAL_V4 + EXTRA_V4]


@st.composite
def private_v4(draw: st.DrawFn) -> int:
    net = draw(st.sampled_from(_PRIVATE_V4_NETS))
    return int(net.network_address) + draw(st.integers(0, net.num_addresses - 1))


@given(
    v4=private_v4(),
    spelling=st.sampled_from(sorted(SPELLINGS)),
    low80=st.integers(0, (1 << 80) - 1),
    other=st.integers(0, M32),
    flags_port=st.integers(0, M32),
    port=st.integers(1, 65535),
)
def test_every_ipv6_spelling_of_every_private_ipv4_is_denied(
    v4: int, spelling: str, low80: int, other: int, flags_port: int, port: int
) -> None:
    policy = attrs.evolve(open_but_private_denied(), allow_cidrs=(Cidr.parse("::/0"),))
    candidates = [v4.to_bytes(4, "big"), v6(SPELLINGS[spelling](v4))]
    candidates.append(v6(six_to_four(v4, low80)))
    candidates.append(v6(teredo(other, v4, flags_port)))
    candidates.append(v6(teredo(v4, other, flags_port)))
    for addr in candidates:
        assert policy.check(addr, port) == PRIVATE


_ALL_SPECIAL_NETS = [ipaddress.ip_network(c) for c in ORIGINAL_V4 + EXTRA_V4 + ORIGINAL_V6 + EXTRA_V6]


def _reference_is_special(addr: bytes) -> bool:
    """An independent model of the built-in check, using ipaddress objects."""
    address = ipaddress.ip_address(addr)
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        value = int(address)
        if address.ipv4_mapped is not None:
            candidates = [address.ipv4_mapped]
        elif value >> 32 in (0, 0xFFFF_0000, 0x0064_FF9B << 64):
            candidates.append(ipaddress.IPv4Address(value & M32))
        elif address.sixtofour is not None:
            candidates.append(address.sixtofour)
        elif address.teredo is not None:
            candidates.extend(address.teredo)
    return any(a in n for a in candidates for n in _ALL_SPECIAL_NETS if a.version == n.version)


@given(
    addr=st.one_of(
        st.binary(min_size=4, max_size=4),
        st.binary(min_size=16, max_size=16),
        st.integers(0, M32).map(lambda v: v6(mapped(v))),
        st.integers(0, M32).map(lambda v: v6(nat64(v))),
        st.integers(0, M32).map(lambda v: v6(compat(v))),
        st.tuples(st.integers(0, M32), st.integers(0, M32)).map(lambda t: v6(teredo(*t))),
        st.integers(0, M32).map(lambda v: v6(six_to_four(v))),
        st.sampled_from([ipaddress.ip_network(c) for c in ORIGINAL_V6 + EXTRA_V6]).map(
            lambda n: n.broadcast_address.packed
        ),
    )
)
def test_builtin_check_agrees_with_an_ipaddress_model(addr: bytes) -> None:
    expected = PRIVATE if _reference_is_special(addr) else None
    assert open_but_private_denied().check(addr, 53) == expected
