/* em_lua_dist.c — the C half of ember.dist: one MPI communicator (Open MPI's
 * MPI_COMM_WORLD) for data-parallel training, in the table ember._dist.
 *
 * MPI is initialised only when the process was started by an MPI launcher
 * (mpirun / mpiexec, or srun with PMIx): without one, init reports rank 0 of
 * 1 and no MPI function is ever called, so a plain `ember` needs no MPI at run
 * time beyond the shared library. Only the main thread calls MPI
 * (MPI_THREAD_FUNNELED); OpenMP and OpenBLAS threads never do.
 *
 * Collectives on tensors work in place on contiguous float32 storage; counts
 * above INT_MAX go in chunks. Errors come back as Lua errors naming the
 * function (the communicator returns errors instead of aborting). A rank that
 * dies makes Open MPI's launcher end the whole job, and a watchdog ends a rank whose
 * collective has waited longer than EMBER_DIST_TIMEOUT (a rank that hangs), so no rank
 * waits forever. */
#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "em_autograd.h"
#include "em_lua.h"
#include "em_rng.h"

static int dist_state;     /* 0: not initialised; 1: MPI running; -1: one process, no MPI */
static int dist_rank = 0, dist_size = 1;

/* ---- the watchdog -------------------------------------------------------------------
 * MPI collectives have no timeout: a rank that hangs (stopped, deadlocked, its node
 * frozen) would keep every other rank waiting forever. A thread watches the collective
 * in progress; when one has waited longer than EMBER_DIST_TIMEOUT seconds (default 600,
 * 0: never) it says so and ends this process, which makes mpirun end the whole job. */
static _Atomic double watch_since; /* start of the collective in progress, 0 when none */
static _Atomic(const char *) watch_what;
static double watch_timeout = 600;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *watchdog(void *arg) {
    (void)arg;
    for (;;) {
        sleep(1);
        double since = atomic_load(&watch_since);
        if (since > 0 && now_seconds() - since > watch_timeout) {
            fprintf(stderr,
                    "ember.dist: rank %d has waited %.0f s in %s for the other ranks: one of them "
                    "is lost or hung; ending the job (EMBER_DIST_TIMEOUT=%g s)\n",
                    dist_rank, now_seconds() - since, atomic_load(&watch_what), watch_timeout);
            fflush(stderr);
            _exit(124);
        }
    }
    return NULL;
}

static void start_watchdog(void) {
    const char *env = getenv("EMBER_DIST_TIMEOUT");
    if (env && *env) watch_timeout = atof(env);
    if (!(watch_timeout > 0)) return;
    pthread_t t;
    if (pthread_create(&t, NULL, watchdog, NULL) == 0) pthread_detach(t);
}

/* Brackets one blocking collective for the watchdog. */
static void watch_begin(const char *what) {
    atomic_store(&watch_what, what);
    atomic_store(&watch_since, now_seconds());
}
static void watch_end(void) { atomic_store(&watch_since, 0.0); }

/* Whether a launcher started this process (the variables Open MPI, PMIx and
 * Slurm's PMI give every rank). */
static bool launched(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

static int mpi_fail(lua_State *L, const char *fname, int rc) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error %d", rc);
    return luaL_error(L, "%s: MPI error: %s", fname, msg);
}

static void need_init(lua_State *L, const char *fname) {
    if (dist_state == 0)
        luaL_error(L, "%s: call ember.dist.init() first", fname);
}

/* _dist.init() -> rank, world size, whether MPI runs */
static int ld_init(lua_State *L) {
    if (dist_state == 0) {
        if (!launched()) {
            dist_state = -1;
        } else {
            int ready = 0;
            MPI_Initialized(&ready);
            if (!ready) {
                int provided = 0;
                int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
                if (rc != MPI_SUCCESS) return mpi_fail(L, "init", rc);
            }
            MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
            MPI_Comm_rank(MPI_COMM_WORLD, &dist_rank);
            MPI_Comm_size(MPI_COMM_WORLD, &dist_size);
            dist_state = 1;
            if (dist_size > 1) start_watchdog();
        }
    }
    lua_pushinteger(L, dist_rank);
    lua_pushinteger(L, dist_size);
    lua_pushboolean(L, dist_state == 1);
    return 3;
}

/* _dist.finalize(): ends MPI (a no-op without it); the communicator cannot be used after. */
static int ld_finalize(lua_State *L) {
    if (dist_state == 1) {
        int done = 0;
        MPI_Finalized(&done);
        if (!done) MPI_Finalize();
    }
    dist_state = dist_state ? -2 : 0;
    return 0;
}

/* _dist.abort(code): ends every rank of the job at once (a fatal error on one). */
static int ld_abort(lua_State *L) {
    int code = (int)luaL_optinteger(L, 1, 1);
    if (dist_state == 1) MPI_Abort(MPI_COMM_WORLD, code);
    return 0;
}

static int ld_barrier(lua_State *L) {
    need_init(L, "barrier");
    if (dist_state != 1) return 0;
    watch_begin("barrier");
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    watch_end();
    return rc == MPI_SUCCESS ? 0 : mpi_fail(L, "barrier", rc);
}

/* The contiguous float data of the tensor at arg, for an in-place collective. */
static float *tensor_data(lua_State *L, int arg, const char *fname, int64_t *n) {
    em_tensor *t = em_lua_check(L, arg, fname);
    if (!em_tensor_is_contiguous(t))
        luaL_error(L, "%s: bad argument #%d (expected a contiguous tensor; call :contiguous() "
                   "first)", fname, arg);
    *n = t->numel;
    t->storage->version++; /* written in place: autograd's version check sees it */
    return em_tensor_data(t);
}

static int check_root(lua_State *L, int arg, const char *fname) {
    lua_Integer root = luaL_optinteger(L, arg, 0);
    if (root < 0 || root >= dist_size)
        luaL_error(L, "%s: root %d is not a rank of this job (0..%d)", fname, (int)root,
                   dist_size - 1);
    return (int)root;
}

/* _dist.broadcast_(t [, root=0]): t on every rank becomes root's t. */
static int ld_broadcast(lua_State *L) {
    need_init(L, "broadcast_");
    int64_t n;
    float *d = tensor_data(L, 1, "broadcast_", &n);
    int root = check_root(L, 2, "broadcast_");
    for (int64_t off = 0; dist_state == 1 && off < n; off += INT_MAX) {
        int count = (int)(n - off < INT_MAX ? n - off : INT_MAX);
        watch_begin("broadcast_");
        int rc = MPI_Bcast(d + off, count, MPI_FLOAT, root, MPI_COMM_WORLD);
        watch_end();
        if (rc != MPI_SUCCESS) return mpi_fail(L, "broadcast_", rc);
    }
    lua_settop(L, 1);
    return 1;
}

static MPI_Op check_op(lua_State *L, int arg, const char *fname, bool *mean) {
    const char *op = luaL_optstring(L, arg, "sum");
    *mean = false;
    if (!strcmp(op, "sum")) return MPI_SUM;
    if (!strcmp(op, "mean")) {
        *mean = true;
        return MPI_SUM;
    }
    if (!strcmp(op, "max")) return MPI_MAX;
    if (!strcmp(op, "min")) return MPI_MIN;
    luaL_error(L, "%s: bad op '%s' (expected 'sum', 'mean', 'max' or 'min')", fname, op);
    return MPI_SUM;
}

/* _dist.all_reduce_(t [, op='sum']): t on every rank becomes the elementwise
 * sum (mean, max, min) over the ranks. */
static int ld_all_reduce(lua_State *L) {
    need_init(L, "all_reduce_");
    int64_t n;
    float *d = tensor_data(L, 1, "all_reduce_", &n);
    bool mean;
    MPI_Op op = check_op(L, 2, "all_reduce_", &mean);
    for (int64_t off = 0; dist_state == 1 && off < n; off += INT_MAX) {
        int count = (int)(n - off < INT_MAX ? n - off : INT_MAX);
        watch_begin("all_reduce_");
        int rc = MPI_Allreduce(MPI_IN_PLACE, d + off, count, MPI_FLOAT, op, MPI_COMM_WORLD);
        watch_end();
        if (rc != MPI_SUCCESS) return mpi_fail(L, "all_reduce_", rc);
    }
    if (mean && dist_size > 1) {
        const float inv = 1.0f / (float)dist_size;
        for (int64_t i = 0; i < n; i++) d[i] *= inv;
    }
    lua_settop(L, 1);
    return 1;
}

/* _dist.all_gather_strings(s) -> {s of rank 0, s of rank 1, ...} (every rank gets all). */
static int ld_all_gather_strings(lua_State *L) {
    need_init(L, "gather");
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    if (len > INT_MAX) return luaL_error(L, "gather: a value of %zu bytes is too large", len);
    lua_createtable(L, dist_size, 0);
    if (dist_state != 1) {
        lua_pushlstring(L, s, len);
        lua_rawseti(L, -2, 1);
        return 1;
    }
    int mine = (int)len;
    int *lens = lua_newuserdatauv(L, sizeof(int) * 2 * (size_t)dist_size, 0);
    int *offs = lens + dist_size;
    watch_begin("gather");
    int rc = MPI_Allgather(&mine, 1, MPI_INT, lens, 1, MPI_INT, MPI_COMM_WORLD);
    watch_end();
    if (rc != MPI_SUCCESS) return mpi_fail(L, "gather", rc);
    int64_t total = 0;
    for (int r = 0; r < dist_size; r++) {
        offs[r] = (int)total;
        total += lens[r];
        if (total > INT_MAX) return luaL_error(L, "gather: more than 2 GB in all");
    }
    char *all = lua_newuserdatauv(L, (size_t)(total > 0 ? total : 1), 0);
    watch_begin("gather");
    rc = MPI_Allgatherv(s, mine, MPI_CHAR, all, lens, offs, MPI_CHAR, MPI_COMM_WORLD);
    watch_end();
    if (rc != MPI_SUCCESS) return mpi_fail(L, "gather", rc);
    for (int r = 0; r < dist_size; r++) {
        lua_pushlstring(L, all + offs[r], (size_t)lens[r]);
        lua_rawseti(L, -4, r + 1);
    }
    lua_pop(L, 2);
    return 1;
}

/* _dist.broadcast_string(s, root) -> root's s on every rank. */
static int ld_broadcast_string(lua_State *L) {
    need_init(L, "broadcast");
    size_t len = 0;
    const char *s = lua_tolstring(L, 1, &len);
    int root = check_root(L, 2, "broadcast");
    if (dist_state != 1) {
        lua_pushlstring(L, s ? s : "", len);
        return 1;
    }
    if (dist_rank == root && (!s || len > INT_MAX))
        return luaL_error(L, "broadcast: the value must be a string under 2 GB");
    int n = dist_rank == root ? (int)len : 0;
    watch_begin("broadcast");
    int rc = MPI_Bcast(&n, 1, MPI_INT, root, MPI_COMM_WORLD);
    watch_end();
    if (rc != MPI_SUCCESS) return mpi_fail(L, "broadcast", rc);
    char *buf = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1), 0);
    if (dist_rank == root) memcpy(buf, s, (size_t)n);
    watch_begin("broadcast");
    rc = MPI_Bcast(buf, n, MPI_CHAR, root, MPI_COMM_WORLD);
    watch_end();
    if (rc != MPI_SUCCESS) return mpi_fail(L, "broadcast", rc);
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

/* _dist.all_reduce_buckets_(tensors, scale, bucket_bytes): every tensor of the
 * list (contiguous, a list without holes) becomes the sum
 * over the ranks of scale * itself, packed into flat buckets of at most
 * bucket_bytes so that a hundred small gradients cost a few messages, not a
 * hundred. scale is this rank's weight (its share of the global batch). */
static int ld_all_reduce_buckets(lua_State *L) {
    need_init(L, "average_gradients_");
    luaL_checktype(L, 1, LUA_TTABLE);
    float scale = (float)luaL_checknumber(L, 2);
    lua_Integer bucket_bytes = luaL_optinteger(L, 3, 25 << 20);
    if (bucket_bytes < 4) return luaL_error(L, "average_gradients_: bucket size must be >= 4 bytes");
    int64_t cap = bucket_bytes / 4;
    int n = (int)luaL_len(L, 1);
    float **data = lua_newuserdatauv(L, sizeof(float *) * (size_t)(n > 0 ? n : 1), 0);
    int64_t *sizes = lua_newuserdatauv(L, sizeof(int64_t) * (size_t)(n > 0 ? n : 1), 0);
    int64_t largest = 0;
    for (int i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        data[i] = tensor_data(L, lua_gettop(L), "average_gradients_", &sizes[i]);
        lua_pop(L, 1);
        if (sizes[i] > largest) largest = sizes[i];
    }
    if (dist_state != 1) { /* one process: the sum over ranks is scale * itself */
        for (int i = 0; i < n; i++)
            for (int64_t k = 0; k < sizes[i]; k++) data[i][k] *= scale;
        return 0;
    }
    int64_t buf_len = cap < largest ? largest : cap;
    if (buf_len > INT_MAX) buf_len = INT_MAX;
    float *buf = malloc((size_t)(buf_len > 0 ? buf_len : 1) * sizeof(float));
    if (!buf) return luaL_error(L, "average_gradients_: out of memory for a bucket");
    int i = 0, rc = MPI_SUCCESS;
    while (i < n && rc == MPI_SUCCESS) {
        if (sizes[i] > buf_len) { /* one tensor larger than a bucket: in place, in chunks */
            for (int64_t k = 0; k < sizes[i]; k++) data[i][k] *= scale;
            for (int64_t off = 0; off < sizes[i] && rc == MPI_SUCCESS; off += INT_MAX) {
                int count = (int)(sizes[i] - off < INT_MAX ? sizes[i] - off : INT_MAX);
                watch_begin("average_gradients_");
                rc = MPI_Allreduce(MPI_IN_PLACE, data[i] + off, count, MPI_FLOAT, MPI_SUM,
                                   MPI_COMM_WORLD);
                watch_end();
            }
            i++;
            continue;
        }
        int first = i;
        int64_t used = 0;
        while (i < n && sizes[i] <= buf_len && used + sizes[i] <= buf_len) {
            for (int64_t k = 0; k < sizes[i]; k++) buf[used + k] = data[i][k] * scale;
            used += sizes[i];
            i++;
        }
        watch_begin("average_gradients_");
        rc = MPI_Allreduce(MPI_IN_PLACE, buf, (int)used, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        watch_end();
        used = 0;
        for (int j = first; j < i && rc == MPI_SUCCESS; j++) {
            memcpy(data[j], buf + used, (size_t)sizes[j] * sizeof(float));
            used += sizes[j];
        }
    }
    free(buf);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(L, "average_gradients_", rc);
}

/* ---- gradient buckets reduced while backward runs (as PyTorch's DDP) --------------
 * An optimizer's parameters, once watched, are split into buckets of about
 * bucket_bytes, last parameter first (the order backward finishes them). The walk's
 * gradient-ready hook (em_set_grad_hooks) marks each parameter whose .grad is final;
 * a bucket whose parameters are all final is packed (times this rank's share) and its
 * all-reduce started at once (MPI_Iallreduce), while backward goes on with the rest.
 * When the walk ends every started bucket is waited for and unpacked into the .grad
 * tensors, and a bucket only partly reached this walk is reduced then (blocking). So
 * after loss:backward() the gradients hold the global averages, as with DDP (clipping
 * after backward sees them), and opt:step() has nothing left to do. */
typedef struct {
    int first, count;     /* parameters [first, first + count) of the group */
    int64_t elems;
    float *buf;
    MPI_Request req;
    bool started;
    int ready;            /* parameters final in this walk */
} grad_bucket;

typedef struct {
    int n;
    em_tensor **params;   /* retained */
    bool *ready;
    int *bucket_of;
    int n_buckets;
    grad_bucket *buckets;
    bool touched;         /* some parameter was final in this walk */
    bool averaged;        /* the last walk left every reached gradient averaged */
} grad_group;

#define MAX_GROUPS 32
static grad_group groups[MAX_GROUPS];
static int n_groups;
static float grad_share = 1.0f; /* this rank's share of the current global batch */
static bool hooks_failed;       /* a bucket could not be reduced during the walk */
static int64_t buckets_overlapped, buckets_at_end; /* for _dist.bucket_counts() */

static void pack_bucket(grad_group *gr, grad_bucket *b) {
    int64_t off = 0;
    for (int i = b->first; i < b->first + b->count; i++) {
        em_tensor *p = gr->params[i];
        if (!gr->ready[i] || !p->grad) continue;
        const float *g = em_tensor_data(p->grad);
        for (int64_t k = 0; k < p->grad->numel; k++) b->buf[off + k] = g[k] * grad_share;
        off += p->grad->numel;
    }
}

static void unpack_bucket(grad_group *gr, grad_bucket *b) {
    int64_t off = 0;
    for (int i = b->first; i < b->first + b->count; i++) {
        em_tensor *p = gr->params[i];
        if (!gr->ready[i] || !p->grad) continue;
        memcpy(em_tensor_data(p->grad), b->buf + off, (size_t)p->grad->numel * sizeof(float));
        p->grad->storage->version++;
        off += p->grad->numel;
    }
}

/* Whether every reached parameter of b has a contiguous gradient of its own shape. */
static bool bucket_packable(grad_group *gr, grad_bucket *b, int64_t *elems) {
    *elems = 0;
    for (int i = b->first; i < b->first + b->count; i++) {
        em_tensor *p = gr->params[i];
        if (!gr->ready[i] || !p->grad) continue;
        if (!em_tensor_is_contiguous(p->grad) || p->grad->offset != 0 ||
            p->grad->numel != p->numel)
            return false;
        *elems += p->grad->numel;
    }
    return true;
}

static bool hooks_enabled = true; /* _dist.set_overlap: off while only some ranks compute */

static void on_grad_ready(em_tensor *leaf, void *ctx) {
    (void)ctx;
    if (!hooks_enabled) return;
    for (int gi = 0; gi < n_groups; gi++) {
        grad_group *gr = &groups[gi];
        for (int i = 0; i < gr->n; i++) {
            if (gr->params[i] != leaf || gr->ready[i]) continue;
            gr->ready[i] = true;
            gr->touched = true;
            grad_bucket *b = &gr->buckets[gr->bucket_of[i]];
            if (++b->ready < b->count) continue;
            int64_t elems;
            if (hooks_failed || !bucket_packable(gr, b, &elems) || elems > INT_MAX) continue;
            pack_bucket(gr, b);
            watch_begin("average_gradients_");
            int rc = MPI_Iallreduce(MPI_IN_PLACE, b->buf, (int)elems, MPI_FLOAT, MPI_SUM,
                                    MPI_COMM_WORLD, &b->req);
            watch_end();
            if (rc == MPI_SUCCESS) {
                b->started = true;
                buckets_overlapped++;
            } else {
                hooks_failed = true;
            }
        }
    }
    /* let the started reductions move on while backward computes (Open MPI progresses
     * non-blocking collectives inside MPI calls) */
    for (int gi = 0; gi < n_groups; gi++)
        for (int k = 0; k < groups[gi].n_buckets; k++) {
            grad_bucket *b = &groups[gi].buckets[k];
            int flag;
            if (b->started && b->req != MPI_REQUEST_NULL) MPI_Test(&b->req, &flag, MPI_STATUS_IGNORE);
        }
}

static void on_backward_done(int rc_walk, void *ctx) {
    (void)ctx;
    for (int gi = 0; gi < n_groups; gi++) {
        grad_group *gr = &groups[gi];
        if (!gr->touched) continue;
        bool all_ok = !hooks_failed && rc_walk == EM_OK;
        for (int k = 0; k < gr->n_buckets; k++) {
            grad_bucket *b = &gr->buckets[k];
            if (b->started) {
                watch_begin("average_gradients_");
                int rc = MPI_Wait(&b->req, MPI_STATUS_IGNORE);
                watch_end();
                if (rc == MPI_SUCCESS) unpack_bucket(gr, b);
                else all_ok = false;
            } else if (b->ready > 0 && all_ok) { /* partly reached: reduce what was */
                int64_t elems;
                if (bucket_packable(gr, b, &elems) && elems <= INT_MAX) {
                    pack_bucket(gr, b);
                    watch_begin("average_gradients_");
                    int rc = MPI_Allreduce(MPI_IN_PLACE, b->buf, (int)elems, MPI_FLOAT, MPI_SUM,
                                           MPI_COMM_WORLD);
                    watch_end();
                    if (rc == MPI_SUCCESS) {
                        unpack_bucket(gr, b);
                        buckets_at_end++;
                    } else {
                        all_ok = false;
                    }
                } else {
                    all_ok = false;
                }
            }
            b->started = false;
            b->ready = 0;
        }
        for (int i = 0; i < gr->n; i++) gr->ready[i] = false;
        gr->touched = false;
        gr->averaged = all_ok; /* else opt:step() reduces the blocking way */
    }
    hooks_failed = false;
}

/* _dist.watch_(params, bucket_bytes) -> group id: reduce these parameters' gradients in
 * buckets during backward from now on. */
static int ld_watch(lua_State *L) {
    need_init(L, "data_parallel");
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer bucket_bytes = luaL_checkinteger(L, 2);
    if (dist_state != 1 || dist_size < 2) {
        lua_pushnil(L);
        return 1;
    }
    if (n_groups >= MAX_GROUPS) { /* more optimizers than that: the blocking way */
        lua_pushnil(L);
        return 1;
    }
    int n = (int)luaL_len(L, 1);
    grad_group *gr = &groups[n_groups];
    memset(gr, 0, sizeof *gr);
    gr->params = calloc((size_t)(n > 0 ? n : 1), sizeof *gr->params);
    gr->ready = calloc((size_t)(n > 0 ? n : 1), sizeof *gr->ready);
    gr->bucket_of = calloc((size_t)(n > 0 ? n : 1), sizeof *gr->bucket_of);
    gr->buckets = calloc((size_t)(n > 0 ? n : 1), sizeof *gr->buckets);
    if (!gr->params || !gr->ready || !gr->bucket_of || !gr->buckets)
        return luaL_error(L, "data_parallel: out of memory");
    for (int i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        gr->params[i] = em_tensor_retain(em_lua_check(L, -1, "data_parallel"));
        lua_pop(L, 1);
    }
    gr->n = n;
    /* buckets from the last parameter back: backward finishes the last layers first */
    int64_t cap = bucket_bytes / 4 > 0 ? bucket_bytes / 4 : 1;
    int i = n - 1;
    while (i >= 0) {
        grad_bucket *b = &gr->buckets[gr->n_buckets];
        int last = i;
        int64_t elems = 0;
        while (i >= 0 && (elems == 0 || elems + gr->params[i]->numel <= cap)) {
            elems += gr->params[i]->numel;
            i--;
        }
        b->first = i + 1;
        b->count = last - i;
        b->elems = elems;
        b->req = MPI_REQUEST_NULL;
        b->buf = malloc((size_t)(elems > 0 ? elems : 1) * sizeof(float));
        if (!b->buf) return luaL_error(L, "data_parallel: out of memory for a bucket");
        for (int k = b->first; k < b->first + b->count; k++) gr->bucket_of[k] = gr->n_buckets;
        gr->n_buckets++;
    }
    if (n_groups == 0) em_set_grad_hooks(on_grad_ready, on_backward_done, NULL);
    lua_pushinteger(L, n_groups++);
    return 1;
}

/* _dist.take_averaged(group) -> whether the last backward left the group's gradients
 * averaged (and forgets it: the next step needs a new backward). */
static int ld_take_averaged(lua_State *L) {
    lua_Integer g = luaL_checkinteger(L, 1);
    bool done = g >= 0 && g < n_groups && groups[g].averaged;
    if (done) groups[g].averaged = false;
    lua_pushboolean(L, done);
    return 1;
}

/* _dist.bucket_counts() -> buckets reduced during backward, at its end (partly reached). */
static int ld_bucket_counts(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)buckets_overlapped);
    lua_pushinteger(L, (lua_Integer)buckets_at_end);
    return 2;
}

/* _dist.set_overlap(on): whether backward reduces watched gradients (off: a walk on one
 * rank alone, e.g. the leader drawing samples, must not start a collective). */
static int ld_set_overlap(lua_State *L) {
    hooks_enabled = lua_toboolean(L, 1);
    return 0;
}

/* _dist.set_share(w): this rank's weight for the gradients of the coming backward. */
static int ld_set_share(lua_State *L) {
    grad_share = (float)luaL_checknumber(L, 1);
    return 0;
}

/* ---- a differentiable all-reduce (sum) ------------------------------------------
 * y = the sum of x over the ranks, on every rank. Its gradient is the sum of the
 * ranks' gradients of y (the all-reduce is its own adjoint), computed by the same
 * op, so gradients of gradients work too. Used by synchronized BatchNorm. */
static em_tensor *all_reduce_sum(em_tensor *x);

static int all_reduce_backward(em_node *n, em_tensor *g, em_tensor **gin) {
    (void)n;
    gin[0] = all_reduce_sum(g);
    return gin[0] ? EM_OK : EM_ERR;
}

static const em_opdef all_reduce_op = {"all_reduce", all_reduce_backward};

static em_tensor *all_reduce_sum(em_tensor *x) {
    if (!x) return NULL;
    em_tensor *out = em_tensor_empty(x->ndim, x->shape);
    if (!out) return NULL;
    em_tensor_read(x, em_tensor_data(out));
    float *d = em_tensor_data(out);
    for (int64_t off = 0; dist_state == 1 && off < out->numel; off += INT_MAX) {
        int count = (int)(out->numel - off < INT_MAX ? out->numel - off : INT_MAX);
        watch_begin("all_reduce");
        int rc = MPI_Allreduce(MPI_IN_PLACE, d + off, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        watch_end();
        if (rc != MPI_SUCCESS) {
            char msg[MPI_MAX_ERROR_STRING];
            int len = 0;
            MPI_Error_string(rc, msg, &len);
            em_tensor_release(out);
            em_error_set("all_reduce: MPI error: %s", msg);
            return NULL;
        }
    }
    em_record_external(&all_reduce_op, out, 1, &x);
    return out;
}

/* _dist.all_reduce(x) -> a new tensor, the sum of x over the ranks, differentiable. */
static int ld_all_reduce_sum(lua_State *L) {
    need_init(L, "all_reduce");
    em_tensor *x = em_lua_check(L, 1, "all_reduce");
    em_lua_push(L, all_reduce_sum(x));
    return 1;
}

/* _dist.set_rng_shard(global_rows, offset, rows): see em_rng_set_shard (offset 0-based;
 * rows 0 ends it). */
static int ld_set_rng_shard(lua_State *L) {
    lua_Integer g = luaL_checkinteger(L, 1), off = luaL_checkinteger(L, 2), rows = luaL_checkinteger(L, 3);
    if (em_rng_set_shard((int64_t)g, (int64_t)off, (int64_t)rows)) return em_lua_core_error(L);
    return 0;
}

void em_lua_open_dist(lua_State *L, int module, int methods) {
    (void)methods;
    static const luaL_Reg fns[] = {
        {"init", ld_init},
        {"finalize", ld_finalize},
        {"abort", ld_abort},
        {"barrier", ld_barrier},
        {"broadcast_", ld_broadcast},
        {"all_reduce_", ld_all_reduce},
        {"all_gather_strings", ld_all_gather_strings},
        {"broadcast_string", ld_broadcast_string},
        {"all_reduce_buckets_", ld_all_reduce_buckets},
        {"set_rng_shard", ld_set_rng_shard},
        {"all_reduce", ld_all_reduce_sum},
        {"watch_", ld_watch},
        {"take_averaged", ld_take_averaged},
        {"set_share", ld_set_share},
        {"bucket_counts", ld_bucket_counts},
        {"set_overlap", ld_set_overlap},
        {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_setfield(L, module, "_dist");
}
