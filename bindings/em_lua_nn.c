/* em_lua_nn.c — (being written) */
#include "em_lua.h"

void em_lua_open_nn(lua_State *L, int module, int methods) { (void)L; (void)module; (void)methods; }
