/* em_lua_module.c — luaopen_ember: the module table, the tensor type, and the
 * Lua half of the library (compiled in; see scripts/embed_lua.lua), whose
 * modules load on first use: ember.nn is require('ember.nn'). */
#include <string.h>

#include "em_lua.h"

#ifndef EMBER_VERSION
#define EMBER_VERSION "0.1.0"
#endif

typedef struct {
    const char *name;
    const char *chunkname;
    const unsigned char *code;
    size_t size;
} em_lua_module;
extern const em_lua_module em_lua_modules[];

/* package.preload loader: upvalue 1 is the module's index. */
static int load_embedded(lua_State *L) {
    const em_lua_module *m = &em_lua_modules[lua_tointeger(L, lua_upvalueindex(1))];
    if (luaL_loadbufferx(L, (const char *)m->code, m->size, m->chunkname, "t") != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, m->name);
    lua_call(L, 1, 1);
    return 1;
}

/* ember.X for a missing key X: require('ember.X') if such a module exists. Modules
 * further down (ember.nn.functional) are loaded by their parent module. */
static int module_index(lua_State *L) {
    const char *key = luaL_checkstring(L, 2);
    if (!strcmp(key, "_extend")) return 0;
    for (int i = 0; em_lua_modules[i].name; i++) {
        const char *name = em_lua_modules[i].name + 6; /* skip "ember." */
        if (!strchr(name, '.') && !strcmp(name, key)) {
            lua_getglobal(L, "require");
            lua_pushstring(L, em_lua_modules[i].name);
            lua_call(L, 1, 1);
            lua_pushvalue(L, 2);
            lua_pushvalue(L, -2);
            lua_rawset(L, 1);
            return 1;
        }
    }
    return 0;
}

int luaopen_ember(lua_State *L) {
    lua_newtable(L); /* module */
    int module = lua_gettop(L);
    lua_newtable(L); /* tensor methods */
    int methods = lua_gettop(L);
    em_lua_open_tensor(L);
    em_lua_open_ops(L, module, methods);
    em_lua_open_nn(L, module, methods);
    em_lua_open_optim(L, module, methods);
    em_lua_open_io(L, module, methods);
    em_lua_open_data(L, module, methods);
    em_lua_open_bench(L, module, methods);
    em_lua_open_linalg(L, module, methods);
    em_lua_open_dist(L, module, methods);
    lua_setfield(L, module, "Tensor"); /* the methods table, for users' extensions */
    lua_pushliteral(L, EMBER_VERSION);
    lua_setfield(L, module, "version");

    /* preload the embedded Lua modules */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    for (int i = 0; em_lua_modules[i].name; i++) {
        lua_pushinteger(L, i);
        lua_pushcclosure(L, load_embedded, 1);
        lua_setfield(L, -2, em_lua_modules[i].name);
    }
    lua_pop(L, 2);

    lua_newtable(L);
    lua_pushcfunction(L, module_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, module);

    /* ember._extend (Lua) adds the Lua-level functions to the module table */
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    if (lua_getfield(L, -1, "ember._extend") == LUA_TFUNCTION) {
        lua_pushliteral(L, "ember._extend");
        lua_call(L, 1, 1);
        if (lua_isfunction(L, -1)) {
            lua_pushvalue(L, module);
            lua_call(L, 1, 0);
        } else {
            lua_pop(L, 1);
        }
    } else {
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_settop(L, module);
    return 1;
}
