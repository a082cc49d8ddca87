"""libbpf's own error numbers (4000-4013), which strerror() calls "Unknown error N"."""

from __future__ import annotations

import re

# From libbpf.h's enum libbpf_errno (LIBBPF_ERRNO__*), in libbpf's own words.
MEANINGS = {
    4000: "something is wrong in libelf",
    4001: "the BPF object's format is invalid (libbpf could not parse its ELF sections)",
    4002: "the object's 'version' section is missing or wrong",
    4003: "the object's endianness does not match the kernel's",
    4004: "internal error in libbpf",
    4005: "relocation failed",
    4006: "loading the program failed",
    4007: "the kernel verifier blocked loading the program",
    4008: "the program is too big",
    4009: "the kernel version is wrong",
    4010: "the kernel does not support this program type",
    4011: "wrong pid in a netlink message",
    4012: "invalid netlink sequence",
    4013: "netlink message parsing failed",
}
_UNKNOWN = re.compile(r"Unknown error (40\d\d)")


def explain(text: str) -> str:
    """``text`` with every "Unknown error 40NN" replaced by what libbpf means by it."""
    def meaning(match: re.Match[str]) -> str:
        code = int(match.group(1))
        return f"{MEANINGS[code]} (libbpf error {code})" if code in MEANINGS else match.group(0)
    return _UNKNOWN.sub(meaning, text)
