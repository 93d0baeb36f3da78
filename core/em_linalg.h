/* em_linalg.h — dense linear algebra beyond matmul: the symmetric
 * eigendecomposition (LAPACK's dsyevd, shipped inside OpenBLAS), the mean and
 * covariance of a set of feature rows, and the Fréchet distance between two
 * Gaussians built from them. Everything is computed in double precision and
 * handed back as float32 tensors (or a double); none of it records autograd.
 *
 * Ownership as in em_tensor.h: results are new references, inputs borrowed;
 * failures return EM_ERR with a message naming the function and the shapes. */
#ifndef EM_LINALG_H
#define EM_LINALG_H

#include "em_tensor.h"

/* Eigenvalues (ascending) and eigenvectors of the symmetric matrix a [n x n]
 * (only its lower triangle is read). values: [n]; vectors: [n x n] whose
 * column j belongs to values[j]; either out pointer may be NULL. */
int em_linalg_eigh(em_tensor *a, em_tensor **values, em_tensor **vectors);

/* Mean [d] and covariance [d x d] (divided by n - correction) of the rows of
 * x [n x d]; needs n > correction. Accumulated in double. */
int em_linalg_mean_cov(em_tensor *x, int correction, em_tensor **mean, em_tensor **cov);

/* The Fréchet distance between N(mu1, s1) and N(mu2, s2):
 *   |mu1 - mu2|^2 + tr(s1 + s2 - 2 (s1^1/2 s2 s1^1/2)^1/2)
 * mu [d], s [d x d] symmetric positive semi-definite (tiny negative
 * eigenvalues from rounding count as 0). The result goes to *out. */
int em_linalg_frechet(em_tensor *mu1, em_tensor *s1, em_tensor *mu2, em_tensor *s2, double *out);

#endif
