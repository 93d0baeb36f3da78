/* em_lua_data.c — the C half of ember.data, ember.image and ember.progress:
 * IDX files, batch assembly, image grids and PNG files (core/em_idx.h,
 * em_batch.h, em_image.h), plus two host helpers (isatty, a monotonic
 * clock). The Lua modules (bindings/lua/ember/data.lua, image.lua, ...) own
 * the public API and its argument checks; these functions live in the table
 * ember._data (and ember._isatty / ember._clock), with 0-based row numbers. */
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "em_batch.h"
#include "em_idx.h"
#include "em_image.h"
#include "em_lua.h"

/* _data.idx_load(path, scale, shift) -> tensor shaped like the file. */
static int ld_idx_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    float scale = (float)luaL_optnumber(L, 2, 1.0);
    float shift = (float)luaL_optnumber(L, 3, 0.0);
    em_lua_push(L, em_idx_load(path, scale, shift));
    return 1;
}

/* _data.idx_save(tensor, path): values 0..255, gzip for a .gz name. */
static int ld_idx_save(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "save_idx");
    const char *path = luaL_checkstring(L, 2);
    if (em_idx_save(path, t)) return em_lua_core_error(L);
    return 0;
}

/* _data.randperm(n) -> [n] of 0-based indices (floats). */
static int ld_randperm(lua_State *L) {
    lua_Integer n = em_lua_check_integer(L, 1, "randperm");
    em_lua_push(L, em_randperm((int64_t)n));
    return 1;
}

/* _data.gather_rows(src, index, start0, count) -> [count x ...]. */
static int ld_gather_rows(lua_State *L) {
    em_tensor *src = em_lua_check(L, 1, "gather_rows");
    em_tensor *index = em_lua_check(L, 2, "gather_rows");
    lua_Integer start = em_lua_check_integer(L, 3, "gather_rows");
    lua_Integer count = em_lua_check_integer(L, 4, "gather_rows");
    em_lua_push(L, em_gather_rows(src, index, (int64_t)start, (int64_t)count));
    return 1;
}

/* _data.random_hflip(x, p) -> x with each sample mirrored with probability p. */
static int ld_random_hflip(lua_State *L) {
    em_tensor *x = em_lua_check(L, 1, "random_hflip");
    double p = luaL_optnumber(L, 2, 0.5);
    em_lua_push(L, em_random_hflip(x, p));
    return 1;
}

/* _data.make_grid(images4d, nrow, padding, pad_value) -> [C x H' x W']. */
static int ld_make_grid(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "make_grid");
    lua_Integer nrow = em_lua_check_integer(L, 2, "make_grid");
    lua_Integer padding = em_lua_check_integer(L, 3, "make_grid");
    float pad_value = (float)luaL_checknumber(L, 4);
    if (nrow > INT_MAX || nrow < INT_MIN) nrow = INT_MIN;
    if (padding > INT_MAX || padding < INT_MIN) padding = INT_MIN;
    em_lua_push(L, em_image_grid(t, (int)nrow, (int)padding, pad_value));
    return 1;
}

/* _data.upscale(img, factor) -> nearest-neighbour upscaled copy. */
static int ld_upscale(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "upscale");
    lua_Integer f = em_lua_check_integer(L, 2, "upscale");
    if (f > INT_MAX || f < INT_MIN) f = 0;
    em_lua_push(L, em_image_upscale(t, (int)f));
    return 1;
}

/* _data.save_png(img, path, lo, hi). */
static int ld_save_png(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "save_png");
    const char *path = luaL_checkstring(L, 2);
    float lo = (float)luaL_optnumber(L, 3, 0.0), hi = (float)luaL_optnumber(L, 4, 1.0);
    if (em_image_save_png(path, t, lo, hi)) return em_lua_core_error(L);
    return 0;
}

/* _data.load_image(path) -> [C x H x W] in [0,1]. */
static int ld_load_image(lua_State *L) {
    em_lua_push(L, em_image_load(luaL_checkstring(L, 1)));
    return 1;
}

/* _data.library_dir() -> the directory of the file holding this code
 * (build/ for build/ember.so or build/ember), or nil. */
static int ld_library_dir(lua_State *L) {
    Dl_info info;
    char resolved[PATH_MAX];
    const char *file = NULL;
    if (dladdr((void *)ld_library_dir, &info) && info.dli_fname && strchr(info.dli_fname, '/'))
        file = info.dli_fname;
    else
        file = "/proc/self/exe";
    if (!realpath(file, resolved)) return 0;
    char *slash = strrchr(resolved, '/');
    if (!slash) return 0;
    lua_pushlstring(L, resolved, slash == resolved ? 1 : (size_t)(slash - resolved));
    return 1;
}

/* ember._isatty(fd) -> whether the descriptor is a terminal. */
static int ld_isatty(lua_State *L) {
    lua_Integer fd = em_lua_check_integer(L, 1, "_isatty");
    lua_pushboolean(L, fd >= 0 && fd <= INT_MAX && isatty((int)fd));
    return 1;
}

/* ember.clock() -> seconds of a monotonic wall clock, for timing code (os.clock
 * counts CPU time summed over all threads, so it overstates a parallel step).
 * Also ember._clock, the name the library itself uses. */
static int ld_clock(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

/* ember._clock: the same clock under the name the library's own modules use (a
 * function of its own, so that a traceback through one never names the other). */
static int ld_clock_internal(lua_State *L) { return ld_clock(L); }

static const luaL_Reg data_funcs[] = {
    {"idx_load", ld_idx_load},       {"idx_save", ld_idx_save},
    {"randperm", ld_randperm},       {"gather_rows", ld_gather_rows},
    {"random_hflip", ld_random_hflip}, {"make_grid", ld_make_grid},
    {"upscale", ld_upscale},         {"save_png", ld_save_png},
    {"load_image", ld_load_image},   {"library_dir", ld_library_dir},
    {NULL, NULL}};

void em_lua_open_data(lua_State *L, int module, int methods) {
    (void)methods;
    luaL_newlib(L, data_funcs);
    lua_setfield(L, module, "_data");
    lua_pushcfunction(L, ld_isatty);
    lua_setfield(L, module, "_isatty");
    lua_pushcfunction(L, ld_clock_internal);
    lua_setfield(L, module, "_clock");
    lua_pushcfunction(L, ld_clock);
    lua_setfield(L, module, "clock");
}
