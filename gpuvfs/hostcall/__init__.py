"""The hostcall server and its handlers (the host half of device/gvfs/hostcall.cuh)."""
