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
        {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_setfield(L, module, "_dist");
}
