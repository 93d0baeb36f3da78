/* em_lua_linalg.c — (being written) */
#include "em_lua.h"

void em_lua_open_linalg(lua_State *L, int module, int methods) { (void)L; (void)module; (void)methods; }
