/* em_lua_io.c — (being written) */
#include "em_lua.h"

void em_lua_open_io(lua_State *L, int module, int methods) { (void)L; (void)module; (void)methods; }
