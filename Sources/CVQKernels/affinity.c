/* The CPUs this process may run on (its affinity mask): container cpusets and `taskset` lower it below the
   online count. 0 when unknown (not Linux, or the call failed). */
#if defined(__linux__)
#define _GNU_SOURCE
#include <sched.h>
#endif
#include "vq_kernels.h"

int vq_affinity_cpu_count(void) {
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
#endif
    return 0;
}
