// A small C layer over Open MPI: MPI_COMM_WORLD, MPI_FLOAT and MPI_SUM are macros Swift cannot import.
#ifndef VQ_MPI_H
#define VQ_MPI_H
#include <stdint.h>

/// MPI_Init (once); returns 0 on success.
int vqmpi_init(void);
int vqmpi_rank(void);
int vqmpi_size(void);
/// Element-wise sum over ranks along a fixed binomial tree to rank 0 (ceil(log2 W) rounds), then broadcast:
/// every rank gets identical bits.
int vqmpi_allreduce_sum_ordered(float *buffer, int64_t count);
int vqmpi_bcast_float(float *buffer, int64_t count, int root);
/// Gathers every rank's `count` into `counts` (worldSize entries).
int vqmpi_allgather_count(int64_t count, int64_t *counts);
/// Concatenates every rank's floats in rank order into `out` (sum of counts).
int vqmpi_allgatherv_float(const float *send, int64_t count, float *out, const int64_t *counts);
void vqmpi_abort(int code);
void vqmpi_finalize(void);
#endif
