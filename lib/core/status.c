/* Status names and descriptions, OpenCL codes included (they pass through unchanged). */
#include "internal.h"

typedef struct {
    int code;
    const char *name;
    const char *text;
} status_entry;

static const status_entry entries[] = {
    {TSR_OK, "TSR_OK", "success"},
    {TSR_ERR_OPENCL, "TSR_ERR_OPENCL", "OpenCL error"},
    {TSR_ERR_INVALID_ARG, "TSR_ERR_INVALID_ARG", "invalid argument"},
    {TSR_ERR_SHAPE, "TSR_ERR_SHAPE", "sizes do not fit"},
    {TSR_ERR_PARSE, "TSR_ERR_PARSE", "malformed input text"},
    {TSR_ERR_UNSUPPORTED, "TSR_ERR_UNSUPPORTED", "not supported"},
    {TSR_ERR_NOT_FOUND, "TSR_ERR_NOT_FOUND", "not found"},
    {TSR_ERR_MISMATCH, "TSR_ERR_MISMATCH", "does not match"},
    {TSR_ERR_STATE, "TSR_ERR_STATE", "invalid in the current state"},
    {TSR_ERR_PLAN, "TSR_ERR_PLAN", "impossible placement"},
    {TSR_ERR_NO_MEMORY, "TSR_ERR_NO_MEMORY", "out of host memory"},
    {TSR_ERR_DEVICE_MEMORY, "TSR_ERR_DEVICE_MEMORY", "out of device memory"},
    {TSR_ERR_NO_DEVICE, "TSR_ERR_NO_DEVICE", "no usable device"},
    {TSR_ERR_IO, "TSR_ERR_IO", "I/O error"},
    {TSR_ERR_CORRUPT, "TSR_ERR_CORRUPT", "corrupt data"},
    {TSR_ERR_TRUNCATED, "TSR_ERR_TRUNCATED", "truncated data"},
    {TSR_ERR_CLBLAST, "TSR_ERR_CLBLAST", "CLBlast error"},
    {TSR_ERR_BLAS, "TSR_ERR_BLAS", "BLAS error"},
    {TSR_ERR_BUILD, "TSR_ERR_BUILD", "OpenCL program build failed"},
    {TSR_ERR_MPI, "TSR_ERR_MPI", "MPI error"},
    {TSR_ERR_PEER_LOST, "TSR_ERR_PEER_LOST", "a peer rank was lost"},
    {TSR_ERR_TIMEOUT, "TSR_ERR_TIMEOUT", "timed out"},
    {TSR_ERR_HWLOC, "TSR_ERR_HWLOC", "hwloc error"},
    {TSR_ERR_NUMERIC, "TSR_ERR_NUMERIC", "NaN or Inf"},
    {TSR_ERR_INTERRUPTED, "TSR_ERR_INTERRUPTED", "stopped on request"},
    {TSR_ERR_INTERNAL, "TSR_ERR_INTERNAL", "internal error"},
    /* OpenCL 1.2 codes, passed through as statuses -1..-68 */
    {-1, "CL_DEVICE_NOT_FOUND", "OpenCL: device not found"},
    {-2, "CL_DEVICE_NOT_AVAILABLE", "OpenCL: device not available"},
    {-3, "CL_COMPILER_NOT_AVAILABLE", "OpenCL: compiler not available"},
    {-4, "CL_MEM_OBJECT_ALLOCATION_FAILURE", "OpenCL: memory object allocation failure"},
    {-5, "CL_OUT_OF_RESOURCES", "OpenCL: out of resources"},
    {-6, "CL_OUT_OF_HOST_MEMORY", "OpenCL: out of host memory"},
    {-7, "CL_PROFILING_INFO_NOT_AVAILABLE", "OpenCL: profiling info not available"},
    {-8, "CL_MEM_COPY_OVERLAP", "OpenCL: memory copy overlap"},
    {-9, "CL_IMAGE_FORMAT_MISMATCH", "OpenCL: image format mismatch"},
    {-10, "CL_IMAGE_FORMAT_NOT_SUPPORTED", "OpenCL: image format not supported"},
    {-11, "CL_BUILD_PROGRAM_FAILURE", "OpenCL: build program failure"},
    {-12, "CL_MAP_FAILURE", "OpenCL: map failure"},
    {-13, "CL_MISALIGNED_SUB_BUFFER_OFFSET", "OpenCL: misaligned sub-buffer offset"},
    {-14, "CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST", "OpenCL: event in wait list failed"},
    {-15, "CL_COMPILE_PROGRAM_FAILURE", "OpenCL: compile program failure"},
    {-16, "CL_LINKER_NOT_AVAILABLE", "OpenCL: linker not available"},
    {-17, "CL_LINK_PROGRAM_FAILURE", "OpenCL: link program failure"},
    {-18, "CL_DEVICE_PARTITION_FAILED", "OpenCL: device partition failed"},
    {-19, "CL_KERNEL_ARG_INFO_NOT_AVAILABLE", "OpenCL: kernel arg info not available"},
    {-30, "CL_INVALID_VALUE", "OpenCL: invalid value"},
    {-31, "CL_INVALID_DEVICE_TYPE", "OpenCL: invalid device type"},
    {-32, "CL_INVALID_PLATFORM", "OpenCL: invalid platform"},
    {-33, "CL_INVALID_DEVICE", "OpenCL: invalid device"},
    {-34, "CL_INVALID_CONTEXT", "OpenCL: invalid context"},
    {-35, "CL_INVALID_QUEUE_PROPERTIES", "OpenCL: invalid queue properties"},
    {-36, "CL_INVALID_COMMAND_QUEUE", "OpenCL: invalid command queue"},
    {-37, "CL_INVALID_HOST_PTR", "OpenCL: invalid host pointer"},
    {-38, "CL_INVALID_MEM_OBJECT", "OpenCL: invalid memory object"},
    {-39, "CL_INVALID_IMAGE_FORMAT_DESCRIPTOR", "OpenCL: invalid image format descriptor"},
    {-40, "CL_INVALID_IMAGE_SIZE", "OpenCL: invalid image size"},
    {-41, "CL_INVALID_SAMPLER", "OpenCL: invalid sampler"},
    {-42, "CL_INVALID_BINARY", "OpenCL: invalid binary"},
    {-43, "CL_INVALID_BUILD_OPTIONS", "OpenCL: invalid build options"},
    {-44, "CL_INVALID_PROGRAM", "OpenCL: invalid program"},
    {-45, "CL_INVALID_PROGRAM_EXECUTABLE", "OpenCL: invalid program executable"},
    {-46, "CL_INVALID_KERNEL_NAME", "OpenCL: invalid kernel name"},
    {-47, "CL_INVALID_KERNEL_DEFINITION", "OpenCL: invalid kernel definition"},
    {-48, "CL_INVALID_KERNEL", "OpenCL: invalid kernel"},
    {-49, "CL_INVALID_ARG_INDEX", "OpenCL: invalid argument index"},
    {-50, "CL_INVALID_ARG_VALUE", "OpenCL: invalid argument value"},
    {-51, "CL_INVALID_ARG_SIZE", "OpenCL: invalid argument size"},
    {-52, "CL_INVALID_KERNEL_ARGS", "OpenCL: invalid kernel arguments"},
    {-53, "CL_INVALID_WORK_DIMENSION", "OpenCL: invalid work dimension"},
    {-54, "CL_INVALID_WORK_GROUP_SIZE", "OpenCL: invalid work-group size"},
    {-55, "CL_INVALID_WORK_ITEM_SIZE", "OpenCL: invalid work-item size"},
    {-56, "CL_INVALID_GLOBAL_OFFSET", "OpenCL: invalid global offset"},
    {-57, "CL_INVALID_EVENT_WAIT_LIST", "OpenCL: invalid event wait list"},
    {-58, "CL_INVALID_EVENT", "OpenCL: invalid event"},
    {-59, "CL_INVALID_OPERATION", "OpenCL: invalid operation"},
    {-60, "CL_INVALID_GL_OBJECT", "OpenCL: invalid GL object"},
    {-61, "CL_INVALID_BUFFER_SIZE", "OpenCL: invalid buffer size"},
    {-62, "CL_INVALID_MIP_LEVEL", "OpenCL: invalid mip level"},
    {-63, "CL_INVALID_GLOBAL_WORK_SIZE", "OpenCL: invalid global work size"},
    {-64, "CL_INVALID_PROPERTY", "OpenCL: invalid property"},
    {-65, "CL_INVALID_IMAGE_DESCRIPTOR", "OpenCL: invalid image descriptor"},
    {-66, "CL_INVALID_COMPILER_OPTIONS", "OpenCL: invalid compiler options"},
    {-67, "CL_INVALID_LINKER_OPTIONS", "OpenCL: invalid linker options"},
    {-68, "CL_INVALID_DEVICE_PARTITION_COUNT", "OpenCL: invalid device partition count"},
};

static const status_entry *find(tsr_status status) {
    for (size_t i = 0; i < TSR_ARRAY_SIZE(entries); i++)
        if (entries[i].code == (int)status) return &entries[i];
    return NULL;
}

const char *tsr_status_str(tsr_status status) {
    const status_entry *e = find(status);
    if (e) return e->text;
    if ((int)status < 0 && (int)status > -100) return "OpenCL error";
    return "unknown status";
}

const char *tsr_status_name(tsr_status status) {
    const status_entry *e = find(status);
    return e ? e->name : "TSR_UNKNOWN_STATUS";
}

const char *tsr_version(void) { return TSR_VERSION_STRING; }
