"""Human names of BPF helpers and map types, from the kernel's enums (`qstep.bpf.uapi`)."""

from __future__ import annotations

from qstep.bpf.uapi import Helper, MapType

HELPER_NAMES: dict[int, str] = {int(h): f"bpf_{h.name.lower()}" for h in Helper if h}

# The kernel renamed these two to *_DEPRECATED (6.2); bpftool still shows the old names.
_MAP_DISPLAY = {MapType.CGROUP_STORAGE_DEPRECATED: "cgroup_storage",
                MapType.PERCPU_CGROUP_STORAGE_DEPRECATED: "percpu_cgroup_storage"}
MAP_TYPE_NAMES: dict[int, str] = {int(m): _MAP_DISPLAY.get(m, m.name.lower()) for m in MapType}
