# Minimal (embedded) configuration for the build machine: host backend only, no MPI (a "self"
# communicator), no OpenCL, no hwloc (topology from sysfs/sysconf). Same as
#   make WITH_MPI=0 WITH_OPENCL=0 WITH_HWLOC=0
# but in its own folder, build/minimal, and without oneDNN. Dependencies left: OpenBLAS, cJSON,
# zlib, nettle.
WITH_MPI := 0
WITH_OPENCL := 0
WITH_HWLOC := 0
WITH_DNNL := 0
BUILD ?= build/minimal
