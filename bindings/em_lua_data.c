/* em_lua_data.c — (being written) */
#include "em_lua.h"

void em_lua_open_data(lua_State *L, int module, int methods) { (void)L; (void)module; (void)methods; }
