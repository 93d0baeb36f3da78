/* em_lua_optim.c — (being written) */
#include "em_lua.h"

void em_lua_open_optim(lua_State *L, int module, int methods) { (void)L; (void)module; (void)methods; }
