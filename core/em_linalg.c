/* em_linalg.c — the symmetric eigendecomposition (LAPACK dsyevd from
 * OpenBLAS), mean/covariance of feature rows, and the Fréchet distance of two
 * Gaussians. All arithmetic is in double; LAPACK is column-major, and since
 * every matrix here is symmetric, a row-major copy read as column-major is the
 * same matrix (its transpose). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "em_linalg.h"

/* LAPACK (Fortran calling convention, 32-bit integers as OpenBLAS ships it);
 * the two trailing lengths are the hidden sizes of the character arguments. */
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
                    double *w, double *work, const int *lwork, int *iwork, const int *liwork,
                    int *info, size_t jobz_len, size_t uplo_len);

/* Copies t (any strides) into a new double array of t->numel values, row-major;
 * fails on NaN or infinity so that LAPACK never sees them. */
static double *read_finite_double(const char *fn, const char *what, const em_tensor *t) {
    int64_t n = t->numel;
    float *f = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    double *d = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (!f || !d) {
        free(f);
        free(d);
        em_error_set("%s: out of memory reading %s", fn, what);
        return NULL;
    }
    em_tensor_read(t, f);
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(f[i])) {
            em_error_set("%s: %s holds %s at element %lld", fn, what, isnan(f[i]) ? "NaN" : "infinity",
                         (long long)i + 1);
            free(f);
            free(d);
            return NULL;
        }
        d[i] = f[i];
    }
    free(f);
    return d;
}

/* Eigen-decomposes the symmetric n x n matrix in a (either triangle; both are
 * read as the same symmetric matrix). On success w holds the eigenvalues in
 * ascending order and, when want_vectors, a holds the eigenvectors in its
 * columns (column-major: a[i + j n] is component i of vector j). */
static int eigh_double(const char *fn, int n, double *a, double *w, bool want_vectors) {
    const char jobz = want_vectors ? 'V' : 'N', uplo = 'L';
    int lwork = -1, liwork = -1, info = 0, iwork_query = 0;
    double work_query = 0;
    dsyevd_(&jobz, &uplo, &n, a, &n, w, &work_query, &lwork, &iwork_query, &liwork, &info, 1, 1);
    if (info != 0) return em_error_set("%s: LAPACK dsyevd workspace query failed (info %d)", fn, info);
    lwork = (int)work_query;
    liwork = iwork_query;
    if (lwork < 1) lwork = 1;
    if (liwork < 1) liwork = 1;
    double *work = malloc((size_t)lwork * sizeof(double));
    int *iwork = malloc((size_t)liwork * sizeof(int));
    if (!work || !iwork) {
        free(work);
        free(iwork);
        return em_error_set("%s: out of memory for the eigen solver's workspace (n = %d)", fn, n);
    }
    dsyevd_(&jobz, &uplo, &n, a, &n, w, work, &lwork, iwork, &liwork, &info, 1, 1);
    free(work);
    free(iwork);
    if (info != 0)
        return em_error_set("%s: LAPACK dsyevd did not converge (info %d, n = %d)", fn, info, n);
    return EM_OK;
}

/* A float tensor of the given shape filled from double values. */
static em_tensor *tensor_from_double(int ndim, const int64_t *shape, const double *v) {
    em_tensor *t = em_tensor_empty(ndim, shape);
    if (!t) return NULL;
    float *p = em_tensor_data(t);
    for (int64_t i = 0; i < t->numel; i++) p[i] = (float)v[i];
    return t;
}

/* Checks that a is a non-empty square matrix [n x n]; returns n or -1. */
static int64_t square_size(const char *fn, const char *what, const em_tensor *a) {
    char buf[EM_SHAPE_STR_MAX];
    if (a->ndim != 2 || a->shape[0] != a->shape[1] || a->shape[0] < 1) {
        em_error_set("%s: %s %s must be a non-empty square matrix [n x n]", fn, what,
                     em_shape_str(buf, sizeof buf, a->ndim, a->shape));
        return -1;
    }
    if (a->shape[0] > 46340) { /* n * n must fit LAPACK's 32-bit integers */
        em_error_set("%s: %s %s is too large for the eigen solver (n at most 46340)", fn, what,
                     em_shape_str(buf, sizeof buf, a->ndim, a->shape));
        return -1;
    }
    return a->shape[0];
}

int em_linalg_eigh(em_tensor *a, em_tensor **values, em_tensor **vectors) {
    const char *fn = "eigh";
    if (values) *values = NULL;
    if (vectors) *vectors = NULL;
    int64_t n = square_size(fn, "matrix", a);
    if (n < 0) return EM_ERR;
    double *m = read_finite_double(fn, "the matrix", a);
    double *w = malloc((size_t)n * sizeof(double));
    if (!m || !w) {
        free(m);
        free(w);
        return m ? em_error_set("%s: out of memory", fn) : EM_ERR;
    }
    int status = eigh_double(fn, (int)n, m, w, vectors != NULL);
    em_tensor *vals = NULL, *vecs = NULL;
    if (status == EM_OK && values) {
        vals = tensor_from_double(1, &n, w);
        if (!vals) status = EM_ERR;
    }
    if (status == EM_OK && vectors) {
        int64_t shape[2] = {n, n};
        vecs = em_tensor_empty(2, shape);
        if (!vecs) {
            status = EM_ERR;
        } else {
            float *p = em_tensor_data(vecs); /* row i, column j = component i of vector j */
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < n; j++) p[i * n + j] = (float)m[i + j * n];
        }
    }
    free(m);
    free(w);
    if (status != EM_OK) {
        em_tensor_release(vals);
        em_tensor_release(vecs);
        return EM_ERR;
    }
    if (values) *values = vals;
    if (vectors) *vectors = vecs;
    return EM_OK;
}

int em_linalg_mean_cov(em_tensor *x, int correction, em_tensor **mean, em_tensor **cov) {
    const char *fn = "mean_cov";
    char buf[EM_SHAPE_STR_MAX];
    *mean = *cov = NULL;
    if (x->ndim != 2 || x->shape[1] < 1)
        return em_error_set("%s: x %s must be 2-D [n x d] (one feature row per sample)", fn,
                            em_shape_str(buf, sizeof buf, x->ndim, x->shape));
    int64_t n = x->shape[0], d = x->shape[1];
    if (correction < 0) return em_error_set("%s: correction must be >= 0, got %d", fn, correction);
    if (n <= correction)
        return em_error_set("%s: x %s has %lld rows; a covariance with correction %d needs at least %d",
                            fn, em_shape_str(buf, sizeof buf, x->ndim, x->shape), (long long)n,
                            correction, correction + 1);
    double *v = read_finite_double(fn, "x", x);
    double *mu = calloc((size_t)d, sizeof(double));
    double *c = malloc((size_t)(d * d) * sizeof(double));
    if (!v || !mu || !c) {
        free(v);
        free(mu);
        free(c);
        return v ? em_error_set("%s: out of memory", fn) : EM_ERR;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) mu[j] += v[i * d + j];
    for (int64_t j = 0; j < d; j++) mu[j] /= (double)n;
#pragma omp parallel for if (n * d > 65536)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) v[i * d + j] -= mu[j];
    /* c = v^T v / (n - correction), upper triangle, then mirrored */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)n, 1.0 / (double)(n - correction),
                v, (int)d, 0.0, c, (int)d);
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < i; j++) c[i * d + j] = c[j * d + i];
    int64_t cshape[2] = {d, d};
    em_tensor *m = tensor_from_double(1, &d, mu);
    em_tensor *s = m ? tensor_from_double(2, cshape, c) : NULL;
    free(v);
    free(mu);
    free(c);
    if (!s) {
        em_tensor_release(m);
        return EM_ERR;
    }
    *mean = m;
    *cov = s;
    return EM_OK;
}

int em_linalg_frechet(em_tensor *mu1, em_tensor *s1, em_tensor *mu2, em_tensor *s2, double *out) {
    const char *fn = "frechet_distance";
    char b1[EM_SHAPE_STR_MAX], b2[EM_SHAPE_STR_MAX], b3[EM_SHAPE_STR_MAX], b4[EM_SHAPE_STR_MAX];
    if (mu1->ndim != 1 || mu2->ndim != 1 || s1->ndim != 2 || s2->ndim != 2 ||
        mu1->shape[0] != mu2->shape[0] || s1->shape[0] != mu1->shape[0] ||
        s1->shape[1] != mu1->shape[0] || s2->shape[0] != mu1->shape[0] ||
        s2->shape[1] != mu1->shape[0] || mu1->shape[0] < 1)
        return em_error_set("%s: expected means [d] and covariances [d x d] of one size d, got mu1 %s, "
                            "sigma1 %s, mu2 %s, sigma2 %s", fn,
                            em_shape_str(b1, sizeof b1, mu1->ndim, mu1->shape),
                            em_shape_str(b2, sizeof b2, s1->ndim, s1->shape),
                            em_shape_str(b3, sizeof b3, mu2->ndim, mu2->shape),
                            em_shape_str(b4, sizeof b4, s2->ndim, s2->shape));
    int64_t d = mu1->shape[0];
    if (square_size(fn, "sigma1", s1) < 0) return EM_ERR;
    double *m1 = read_finite_double(fn, "mu1", mu1);
    double *m2 = m1 ? read_finite_double(fn, "mu2", mu2) : NULL;
    double *a = m2 ? read_finite_double(fn, "sigma1", s1) : NULL;
    double *b = a ? read_finite_double(fn, "sigma2", s2) : NULL;
    double *w = malloc((size_t)d * sizeof(double));
    double *root = malloc((size_t)(d * d) * sizeof(double));
    double *tmp = malloc((size_t)(d * d) * sizeof(double));
    int status = EM_OK;
    if (!b || !w || !root || !tmp) {
        status = b ? em_error_set("%s: out of memory (d = %lld)", fn, (long long)d) : EM_ERR;
        goto done;
    }
    double dist = 0, tr1 = 0, tr2 = 0;
    for (int64_t i = 0; i < d; i++) {
        double diff = m1[i] - m2[i];
        dist += diff * diff;
        tr1 += a[i * d + i];
        tr2 += b[i * d + i];
    }
    /* sigma1^1/2 = V diag(sqrt(max(w, 0))) V^T, with V in a's columns (column-major) */
    if ((status = eigh_double(fn, (int)d, a, w, true)) != EM_OK) goto done;
    for (int64_t j = 0; j < d; j++) {
        double s = sqrt(w[j] > 0 ? w[j] : 0);
        for (int64_t i = 0; i < d; i++) tmp[i + j * d] = a[i + j * d] * s;
    }
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, (int)d, (int)d, (int)d, 1.0, tmp, (int)d, a,
                (int)d, 0.0, root, (int)d);
    /* m = root b root (symmetric: b is read as itself, being symmetric) */
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)d, (int)d, 1.0, root, (int)d, b,
                (int)d, 0.0, tmp, (int)d);
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)d, (int)d, 1.0, tmp, (int)d,
                root, (int)d, 0.0, a, (int)d);
    for (int64_t i = 0; i < d; i++) /* symmetrise away rounding */
        for (int64_t j = 0; j < i; j++) {
            double s = 0.5 * (a[i + j * d] + a[j + i * d]);
            a[i + j * d] = a[j + i * d] = s;
        }
    if ((status = eigh_double(fn, (int)d, a, w, false)) != EM_OK) goto done;
    double tr_sqrt = 0;
    for (int64_t j = 0; j < d; j++) tr_sqrt += sqrt(w[j] > 0 ? w[j] : 0);
    double fd = dist + tr1 + tr2 - 2 * tr_sqrt;
    *out = fd > 0 ? fd : 0; /* a distance; rounding may dip a hair below 0 */
done:
    free(m1);
    free(m2);
    free(a);
    free(b);
    free(w);
    free(root);
    free(tmp);
    return status;
}
