/* em_lua.h — what the Lua glue files share: the tensor userdata, argument
 * checks that say "expected X, got Y", and turning a core error into a Lua
 * error. Lua sees 1-based dims and indices; core/ sees 0-based. */
#ifndef EM_LUA_H
#define EM_LUA_H

#include <lauxlib.h>
#include <lua.h>

#include "em_tensor.h"

#define EM_TENSOR_MT "ember.Tensor"

/* The userdata: a pointer so that t:free() can drop the tensor at once. */
typedef struct {
    em_tensor *t; /* NULL once freed */
} em_lua_tensor;

/* Pushes t as a Lua tensor, taking over the caller's reference. t == NULL
 * raises the core error message (never returns then). */
void em_lua_push(lua_State *L, em_tensor *t);
/* Raises the core's current error message as a Lua error. */
int em_lua_core_error(lua_State *L);
/* The tensor at arg (error naming fname and the arg when it isn't one, or
 * was freed). */
em_tensor *em_lua_check(lua_State *L, int arg, const char *fname);
em_tensor *em_lua_test(lua_State *L, int arg); /* NULL if not a live tensor */
/* A tensor from arg: a tensor (retained) or a number (a new 0-dim tensor). */
em_tensor *em_lua_tensor_or_number(lua_State *L, int arg, const char *fname);
/* A Lua dim (1-based, negative from the end) to a core dim (0-based or
 * negative); errors on 0 or non-integers. */
int em_lua_check_dim(lua_State *L, int arg, const char *fname);
int em_lua_opt_dim(lua_State *L, int arg, const char *fname, int def);
/* A shape from a table {2,3} or from the integers at arg..top; returns ndim. */
int em_lua_check_shape(lua_State *L, int arg, const char *fname, int64_t *shape);
/* A 0-based index tensor from a 1-based Lua one (or table of integers). */
em_tensor *em_lua_index_tensor(lua_State *L, int arg, const char *fname);
/* Raises "fname: bad argument #arg 'name' (expected X, got Y)". */
int em_lua_arg_error(lua_State *L, int arg, const char *fname, const char *expected);
/* A C integer from a Lua integer-valued number, with a clear error. */
lua_Integer em_lua_check_integer(lua_State *L, int arg, const char *fname);
/* Tells the GC about `bytes` of memory it cannot see. */
void em_lua_gc_account(lua_State *L, size_t bytes);

/* Formats a tensor like PyTorch/Torch7 (values, abbreviated, then shape). */
void em_lua_push_tostring(lua_State *L, em_tensor *t);

/* Registration of each glue file's functions into the module table (at -1)
 * and tensor methods table (at -2 when given). */
void em_lua_open_tensor(lua_State *L);  /* creates the metatable */
void em_lua_open_ops(lua_State *L, int module, int methods);
/* Each glue file registers its functions into the module table. */
void em_lua_open_nn(lua_State *L, int module, int methods);    /* em_lua_nn.c: layers */
void em_lua_open_optim(lua_State *L, int module, int methods); /* em_lua_optim.c: losses, optimizers */
void em_lua_open_io(lua_State *L, int module, int methods);    /* em_lua_io.c: checkpoints */
void em_lua_open_data(lua_State *L, int module, int methods);  /* em_lua_data.c: IDX, images */
void em_lua_open_bench(lua_State *L, int module, int methods); /* em_lua_bench.c: timing probes */
void em_lua_open_linalg(lua_State *L, int module, int methods); /* em_lua_linalg.c: eigen etc. */
void em_lua_open_dist(lua_State *L, int module, int methods);   /* em_lua_dist.c: MPI */

#endif
