// A small C layer over Open MPI: MPI_COMM_WORLD, MPI_FLOAT and MPI_SUM are macros Swift cannot import.
// Only a build with the `MPI` package trait (which defines VQ_WITH_MPI and links libmpi) includes <mpi.h>;
// the default build compiles stubs, so a machine without Open MPI builds the whole package.
#include "vq_mpi.h"
#include <stdlib.h>

#if defined(VQ_WITH_MPI)
#  if __has_include(<mpi.h>)
#    include <mpi.h>
#  elif __has_include(<mpi/mpi.h>)
     // Debian and Ubuntu: /usr/include/<triple>/mpi links to Open MPI's include folder.
#    include <mpi/mpi.h>
#  elif __has_include("/usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h")
#    include "/usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h"
#  elif __has_include("/usr/lib/aarch64-linux-gnu/openmpi/include/mpi.h")
#    include "/usr/lib/aarch64-linux-gnu/openmpi/include/mpi.h"
#  else
#    error "the MPI trait needs Open MPI's headers (Debian: apt-get install libopenmpi-dev)"
#  endif


int vqmpi_init(void) {
    int flag = 0;
    MPI_Initialized(&flag);
    if (flag) return 0;
    int provided = 0;
    return MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
}

int vqmpi_rank(void) { int r = 0; MPI_Comm_rank(MPI_COMM_WORLD, &r); return r; }
int vqmpi_size(void) { int s = 1; MPI_Comm_size(MPI_COMM_WORLD, &s); return s; }

int vqmpi_allreduce_sum_ordered(float *buffer, int64_t count) {
    int rank = vqmpi_rank(), size = vqmpi_size();
    if (size == 1 || count == 0) return 0;
    // Binomial tree towards rank 0 in a fixed pairing: at distance s, rank r (r % 2s == 0) adds what rank
    // r + s holds. ceil(log2 W) rounds; the association is fixed by W alone, and the broadcast gives every
    // rank the root's bits.
    float *tmp = NULL;
    for (int s = 1; s < size; s <<= 1) {
        if (rank % (2 * s) == s) {
            int rc = MPI_Send(buffer, (int)count, MPI_FLOAT, rank - s, 7, MPI_COMM_WORLD);
            if (rc != MPI_SUCCESS) { free(tmp); return rc; }
            break;
        }
        if (rank % (2 * s) == 0 && rank + s < size) {
            if (!tmp && !(tmp = malloc(sizeof(float) * (size_t)count))) return -1;
            int rc = MPI_Recv(tmp, (int)count, MPI_FLOAT, rank + s, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            if (rc != MPI_SUCCESS) { free(tmp); return rc; }
            for (int64_t i = 0; i < count; i++) buffer[i] += tmp[i];
        }
    }
    free(tmp);
    return MPI_Bcast(buffer, (int)count, MPI_FLOAT, 0, MPI_COMM_WORLD);
}

int vqmpi_bcast_float(float *buffer, int64_t count, int root) {
    return MPI_Bcast(buffer, (int)count, MPI_FLOAT, root, MPI_COMM_WORLD);
}

int vqmpi_allgather_count(int64_t count, int64_t *counts) {
    long long c = (long long)count;
    long long *all = malloc(sizeof(long long) * (size_t)vqmpi_size());
    if (!all) return -1;
    int rc = MPI_Allgather(&c, 1, MPI_LONG_LONG, all, 1, MPI_LONG_LONG, MPI_COMM_WORLD);
    for (int i = 0; i < vqmpi_size(); i++) counts[i] = (int64_t)all[i];
    free(all);
    return rc;
}

int vqmpi_allgatherv_float(const float *send, int64_t count, float *out, const int64_t *counts) {
    int size = vqmpi_size();
    int *rc = malloc(sizeof(int) * (size_t)size), *displ = malloc(sizeof(int) * (size_t)size);
    if (!rc || !displ) { free(rc); free(displ); return -1; }
    int64_t off = 0;
    for (int i = 0; i < size; i++) { rc[i] = (int)counts[i]; displ[i] = (int)off; off += counts[i]; }
    int r = MPI_Allgatherv(send, (int)count, MPI_FLOAT, out, rc, displ, MPI_FLOAT, MPI_COMM_WORLD);
    free(rc);
    free(displ);
    return r;
}

void vqmpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }
void vqmpi_finalize(void) {
    int flag = 0;
    MPI_Finalized(&flag);
    if (!flag) MPI_Finalize();
}

#else  // No MPI in this build: every entry point fails, so nothing can pretend to be distributed.

int vqmpi_init(void) { return -1; }
int vqmpi_rank(void) { return 0; }
int vqmpi_size(void) { return 1; }
int vqmpi_allreduce_sum_ordered(float *buffer, int64_t count) { (void)buffer; (void)count; return -1; }
int vqmpi_bcast_float(float *buffer, int64_t count, int root) { (void)buffer; (void)count; (void)root; return -1; }
int vqmpi_allgather_count(int64_t count, int64_t *counts) { (void)count; (void)counts; return -1; }
int vqmpi_allgatherv_float(const float *send, int64_t count, float *out, const int64_t *counts) {
    (void)send; (void)count; (void)out; (void)counts; return -1;
}
void vqmpi_abort(int code) { exit(code); }
void vqmpi_finalize(void) {}

#endif
