/*
 * ember_main.c — the `ember` host program.
 *
 * Like Lua's own lua.c: it opens the standard libraries and the built-in ember
 * library, then runs what the command line asks for:
 *
 *   ember                      interactive REPL (stdin a terminal) or stdin as a script
 *   ember script.lua a b       run a script; arg[0] = script, arg[1..] = a b, also `...`
 *   ember -e CODE ...          run CODE (repeatable), then the script if any
 *   ember -i script.lua        run the script, then enter the REPL
 *   ember -                    run stdin as a script
 *   ember run|sample|sweep ... hand over to the Lua module ember.cli
 *
 * Ctrl-C while Lua code runs raises the Lua error "interrupted" at the next safe point
 * (a debug hook set from the signal handler), so training loops can catch it with pcall
 * and save a checkpoint; at the REPL prompt it only abandons the line being typed. Under
 * `ember run|sample|sweep`, SIGTERM (kill, a cluster's time limit) stops Lua the same way.
 *
 * Line editing uses libedit's readline emulation; history lives in $EMBER_HISTORY or
 * ~/.ember_history as plain text, one entry per line.
 */

#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

#include <editline/readline.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#ifndef EMBER_VERSION
#define EMBER_VERSION "0.1.0"
#endif

#define EMBER_LUA_VERSION "Lua " LUA_VERSION_MAJOR "." LUA_VERSION_MINOR

#define PROMPT_FIRST     "> "
#define PROMPT_MORE      ">> "
#define HISTORY_MAX      1000
#define COMPLETION_MAX   4000
#define INTERRUPTED_EXIT 130

/* The library entry point: pushes the `ember` module table. */
int luaopen_ember(lua_State *L);

static const char progname[] = "ember";

/* The state that the SIGINT handler and the completion callback work on. */
static lua_State *g_state = NULL;
/* 1 while the REPL waits for a line; SIGINT then cancels the line instead of Lua code. */
static volatile sig_atomic_t g_reading_line = 0;
/* Set by SIGINT while reading a line; makes the pending read give up. */
static volatile sig_atomic_t g_line_interrupted = 0;
/* Set by SIGWINCH / SIGCONT while reading a line; the reader then fixes up the terminal. */
static volatile sig_atomic_t g_window_changed = 0;
static volatile sig_atomic_t g_continued = 0;
/* Whether the last error that reached the message handler was the Ctrl-C interrupt. */
static int g_error_was_interrupt = 0;
/* Whether the REPL uses libedit (stdin is a terminal) or plain line reads. */
static int g_use_editline = 0;
/* Where history entries are appended, or NULL when there is no history file. */
static char *g_history_path = NULL;


/* ---------------------------------------------------------------------------------
 * Messages and protected calls
 * ------------------------------------------------------------------------------- */

/* Prints the usage text to `out` (stdout for --help, stderr for a bad command line). */
static void print_usage(FILE *out)
{
  fprintf(out,
    "usage: %s [options] [script [args]]\n"
    "       %s run|sample|sweep [args]\n"
    "\n"
    "With no script and a terminal on stdin, %s starts the interactive REPL;\n"
    "with stdin redirected it runs stdin as a script.\n"
    "\n"
    "Options:\n"
    "  -e CODE        run the Lua code CODE (may be repeated)\n"
    "  -i             enter the REPL after running the script and -e code\n"
    "  -              run stdin as the script and stop handling options\n"
    "  --             stop handling options\n"
    "  -v, --version  print the version and exit\n"
    "  -h, --help     print this help and exit\n"
    "\n"
    "Commands (from the Lua module ember.cli; `%s COMMAND --help` for details):\n"
    "  run RECIPE.lua [opts]    train a recipe, saving checkpoints in a run folder\n"
    "  sample DIR [opts]        draw samples from a run folder's model\n"
    "  sweep RECIPE.lua [opts]  run a recipe over a grid or random hyper-parameters\n"
    "\n"
    "Scripts see their arguments in the global table `arg` and as `...`.\n"
    "Ctrl-C raises the error \"interrupted\", which scripts may catch with pcall.\n",
    progname, progname, progname, progname);
}

/* Prints "ember: msg" (or just msg when `prefixed` is 0) on stderr. */
static void print_message(const char *msg, int prefixed)
{
  if (prefixed)
    fprintf(stderr, "%s: %s\n", progname, msg);
  else
    fprintf(stderr, "%s\n", msg);
  fflush(stderr);
}

/* Reports the error on top of the stack when status is not LUA_OK and pops it. */
static int report(lua_State *L, int status, int prefixed)
{
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    print_message(msg != NULL ? msg : "(error object is not a string)", prefixed);
    lua_pop(L, 1);
  }
  return status;
}

/* Message handler for protected calls: turns the error into a string with a traceback
 * and notes whether it was the Ctrl-C interrupt. */
static int message_handler(lua_State *L)
{
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;  /* an error object that prints itself: that is the message */
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  g_error_was_interrupt = strcmp(msg, "interrupted") == 0;
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Calls the function below `narg` arguments on the stack, protected, with the traceback
 * message handler. Returns the lua_pcall status. */
static int docall(lua_State *L, int narg, int nres)
{
  int base = lua_gettop(L) - narg;
  int status;
  lua_pushcfunction(L, message_handler);
  lua_insert(L, base);
  g_error_was_interrupt = 0;
  status = lua_pcall(L, narg, nres, base);
  lua_remove(L, base);
  return status;
}

/* The exit status for a failed top-level call: 130 after an uncaught Ctrl-C, else 1. */
static int failure_exit_status(void)
{
  return g_error_was_interrupt ? INTERRUPTED_EXIT : EXIT_FAILURE;
}


/* ---------------------------------------------------------------------------------
 * Signals: Ctrl-C raises "interrupted" inside Lua; at the prompt it cancels the line
 * ------------------------------------------------------------------------------- */

static void install_sigint_handler(void);

/* Debug hook set by the SIGINT handler: removes itself and raises "interrupted". */
static void interrupt_hook(lua_State *L, lua_Debug *ar)
{
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  install_sigint_handler();  /* re-arm: the handler fell back to SIG_DFL */
  lua_pushliteral(L, "interrupted");
  lua_error(L);
}

/* Deferred interrupts (ember.host.defer_interrupts): a data-parallel run must stop all
 * its ranks at the same step, so there a signal only sets g_interrupt_pending, which the
 * run polls at each step boundary and agrees on with the other ranks. */
static volatile sig_atomic_t g_defer_interrupts = 0;
static volatile sig_atomic_t g_interrupt_pending = 0;

/* SIGINT handler. While reading a line it only flags the read; otherwise it asks Lua to
 * stop at the next instruction. A second Ctrl-C before that (stuck in C code) kills. */
static void on_sigint(int sig)
{
  if (g_reading_line) {
    g_line_interrupted = 1;
    return;
  }
  if (g_defer_interrupts) {
    g_interrupt_pending = 1;
    return;
  }
  signal(sig, SIG_DFL);
  if (g_state != NULL)
    lua_sethook(g_state, interrupt_hook,
                LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

/* SIGTERM handler for `ember run|sample|sweep`: the polite stop that `kill`, a cluster's
 * time limit (Slurm sends SIGTERM first) or a shutdown give. It stops Lua as Ctrl-C does,
 * so a run saves its checkpoint before it goes; a second SIGTERM kills at once. */
static void on_sigterm(int sig)
{
  if (g_defer_interrupts) {
    g_interrupt_pending = 1;
    return;
  }
  signal(sig, SIG_DFL);
  if (g_state != NULL)
    lua_sethook(g_state, interrupt_hook,
                LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

/* ember.host.defer_interrupts(on): Ctrl-C / SIGTERM only flag (true) or stop Lua (false). */
static int host_defer_interrupts(lua_State *L)
{
  g_defer_interrupts = lua_toboolean(L, 1);
  return 0;
}

/* ember.host.take_interrupt() -> whether a Ctrl-C / SIGTERM came since the last call. */
static int host_take_interrupt(lua_State *L)
{
  lua_pushboolean(L, g_interrupt_pending != 0);
  g_interrupt_pending = 0;
  return 1;
}

/* Makes require('ember.host') return the host program's functions (only the ember
 * program has them: from stock lua5.4 the module does not exist). */
static void register_host_module(lua_State *L)
{
  static const luaL_Reg fns[] = {{"defer_interrupts", host_defer_interrupts},
                                 {"take_interrupt", host_take_interrupt},
                                 {NULL, NULL}};
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  luaL_newlib(L, fns);
  lua_setfield(L, -2, "ember.host");
  lua_pop(L, 1);
}

/* SIGWINCH / SIGCONT handler: only flags the event for the line reader. */
static void on_terminal_signal(int sig)
{
  if (sig == SIGWINCH)
    g_window_changed = 1;
  else
    g_continued = 1;
}

/* Installs `handler` for `sig` without SA_RESTART, so a blocked read returns EINTR. */
static void set_handler(int sig, void (*handler)(int))
{
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(sig, &sa, NULL);
}

/* Catches window resizes and resumption after Ctrl-Z while libedit owns the terminal
 * (`on` = 1), and gives both back to their defaults while Lua code runs (`on` = 0). */
static void watch_terminal_signals(int on)
{
  set_handler(SIGWINCH, on ? on_terminal_signal : SIG_DFL);
  set_handler(SIGCONT, on ? on_terminal_signal : SIG_DFL);
}

/* Installs the Ctrl-C handler (unless SIGINT was ignored by whoever started us). */
static void install_sigint_handler(void)
{
  static int ignored = -1;
  if (ignored < 0) {
    struct sigaction old;
    ignored = sigaction(SIGINT, NULL, &old) == 0 && old.sa_handler == SIG_IGN;
  }
  if (!ignored)
    set_handler(SIGINT, on_sigint);
}

/* Drops an interrupt that arrived after the last Lua code finished, so it does not hit
 * the next REPL statement, and re-arms the handler. */
static void clear_stale_interrupt(lua_State *L)
{
  if (lua_gethook(L) == interrupt_hook)
    lua_sethook(L, NULL, 0, 0);
  install_sigint_handler();
}


/* ---------------------------------------------------------------------------------
 * History: plain text, one entry per line, capped at HISTORY_MAX entries
 * ------------------------------------------------------------------------------- */

/* Rewrites the history file with only `lines[0..n)` (used to cap its size). Failure is
 * harmless: the old file stays. */
static void history_rewrite(char **lines, size_t n)
{
  size_t len = strlen(g_history_path);
  char *tmp = malloc(len + 5);
  FILE *f;
  size_t i;
  int ok = 1;
  if (tmp == NULL)
    return;
  memcpy(tmp, g_history_path, len);
  memcpy(tmp + len, ".tmp", 5);
  f = fopen(tmp, "w");
  if (f != NULL) {
    for (i = 0; i < n && ok; i++)
      ok = fputs(lines[i], f) >= 0 && fputc('\n', f) != EOF;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, g_history_path) != 0)
      remove(tmp);
  }
  free(tmp);
}

/* Decides where history lives and loads its last HISTORY_MAX entries into libedit. */
static void history_load(void)
{
  const char *env = getenv("EMBER_HISTORY");
  const char *home = getenv("HOME");
  char **lines = NULL, *buf = NULL;
  size_t n = 0, cap = 0, bufcap = 0, first, i;
  ssize_t got;
  FILE *f;

  using_history();
  stifle_history(HISTORY_MAX);
  if (env != NULL && env[0] != '\0') {
    g_history_path = strdup(env);
  } else if (home != NULL && home[0] != '\0') {
    g_history_path = malloc(strlen(home) + sizeof "/.ember_history");
    if (g_history_path != NULL)
      sprintf(g_history_path, "%s/.ember_history", home);
  }
  if (g_history_path == NULL || (f = fopen(g_history_path, "r")) == NULL)
    return;
  while ((got = getline(&buf, &bufcap, f)) >= 0) {
    if (got > 0 && buf[got - 1] == '\n')
      buf[--got] = '\0';
    if (got == 0)
      continue;
    if (n == cap) {
      size_t ncap = cap ? 2 * cap : 256;
      char **grown = realloc(lines, ncap * sizeof *lines);
      if (grown == NULL)
        break;
      lines = grown;
      cap = ncap;
    }
    if ((lines[n] = strdup(buf)) == NULL)
      break;
    n++;
  }
  free(buf);
  fclose(f);
  first = n > HISTORY_MAX ? n - HISTORY_MAX : 0;
  for (i = first; i < n; i++)
    add_history(lines[i]);
  if (first > 0)
    history_rewrite(lines + first, n - first);
  for (i = 0; i < n; i++)
    free(lines[i]);
  free(lines);
}

/* Adds a line typed at the terminal to the in-memory history and appends it to the
 * history file. Consecutive duplicates are kept once; a failed write is ignored. */
static void history_add(const char *line)
{
  static char *last = NULL;
  int fd;
  if (!g_use_editline || (last != NULL && strcmp(last, line) == 0))
    return;
  free(last);
  last = strdup(line);
  add_history(line);
  if (g_history_path == NULL)
    return;
  fd = open(g_history_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0) {
    size_t len = strlen(line);
    char *rec = malloc(len + 1);
    if (rec != NULL) {
      memcpy(rec, line, len);
      rec[len] = '\n';
      if (write(fd, rec, len + 1) < 0) { /* history is best effort */ }
      free(rec);
    }
    close(fd);
  }
}


/* ---------------------------------------------------------------------------------
 * Tab completion: global names, and after `obj.` / `obj:` the keys of obj
 * ------------------------------------------------------------------------------- */

static const char *const lua_keywords[] = {
  "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto",
  "if", "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until",
  "while", NULL
};

/* Candidates for the completion in progress, already filtered; read by the generator. */
static char **g_candidates = NULL;
static size_t g_ncandidates = 0;

/* Whether s[0..len) is a Lua identifier (keywords included). */
static int is_identifier(const char *s, size_t len)
{
  size_t i;
  if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
    return 0;
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9')))
      return 0;
  }
  return 1;
}

/* Whether a name is left out of the completions of stem: private names (a leading
 * '_', as ember._clock) show only once the user has typed the '_'. */
static int is_hidden(const char *name, const char *stem)
{
  return name[0] == '_' && stem[0] != '_';
}

/* Adds to the set at index `set` each identifier key of the table at `tab` that starts
 * with stem, written as prefix..key; `functions_only` keeps only function values.
 * Private keys are left out unless stem starts with '_'. */
static void add_matching_keys(lua_State *L, int set, int tab, const char *prefix,
                              const char *stem, int functions_only)
{
  size_t slen = strlen(stem);
  lua_pushnil(L);
  while (lua_next(L, tab) != 0) {
    size_t klen;
    const char *key;
    if (lua_type(L, -2) == LUA_TSTRING &&
        (!functions_only || lua_type(L, -1) == LUA_TFUNCTION)) {
      key = lua_tolstring(L, -2, &klen);
      if (klen >= slen && memcmp(key, stem, slen) == 0 && is_identifier(key, klen) &&
          !is_hidden(key, stem)) {
        lua_pushfstring(L, "%s%s", prefix, key);
        lua_pushboolean(L, 1);
        lua_rawset(L, set);
      }
    }
    lua_pop(L, 1);
  }
}

/* Replaces the value on top of the stack with its metatable's __index when that is a
 * table; returns 0 (popping the value) when there is none. */
static int step_to_index_table(lua_State *L)
{
  if (!lua_getmetatable(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pushliteral(L, "__index");
  lua_rawget(L, -2);
  lua_remove(L, -2);  /* the metatable */
  lua_remove(L, -2);  /* the value */
  if (lua_type(L, -1) != LUA_TTABLE) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

/* Replaces `value name` on top of the stack with value[name], looked up raw in the
 * value (when a table) and then through __index tables; never runs metamethods. */
static void raw_field(lua_State *L)
{
  int depth;
  lua_pushvalue(L, -2);  /* value name current */
  for (depth = 0; depth < 32; depth++) {
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_pushvalue(L, -2);
      if (lua_rawget(L, -2) != LUA_TNIL) {  /* value name current result */
        lua_replace(L, -4);
        lua_pop(L, 2);
        return;
      }
      lua_pop(L, 1);
    }
    if (!step_to_index_table(L)) {  /* popped current */
      lua_pop(L, 2);
      lua_pushnil(L);
      return;
    }
  }
  lua_pop(L, 3);
  lua_pushnil(L);
}

/* Whether the value at idx is the global table. */
static int is_globals(lua_State *L, int idx)
{
  int same;
  idx = lua_absindex(L, idx);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  same = lua_rawequal(L, idx, -1);
  lua_pop(L, 1);
  return same;
}

/* For an __index function (at fidx): adds the keys of the tables it closes over, such as
 * the methods table of a C closure; _ENV and the global table are left out. */
static void add_upvalue_tables(lua_State *L, int set, int fidx, const char *prefix,
                               const char *stem, int functions_only)
{
  int i;
  const char *name;
  for (i = 1; (name = lua_getupvalue(L, fidx, i)) != NULL; i++) {
    if (lua_type(L, -1) == LUA_TTABLE && strcmp(name, "_ENV") != 0 && !is_globals(L, -1))
      add_matching_keys(L, set, lua_gettop(L), prefix, stem, functions_only);
    lua_pop(L, 1);
  }
}

/* Adds the names of modules under `path` (e.g. "ember" -> ember.optim) that are loaded
 * or preloaded, so lazily loaded submodules complete before their first use. */
static void add_module_names(lua_State *L, int set, const char *path, size_t pathlen,
                             const char *stem)
{
  static const char *const tables[] = { LUA_LOADED_TABLE, LUA_PRELOAD_TABLE };
  size_t slen = strlen(stem), t;
  for (t = 0; t < 2; t++) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, tables[t]) == LUA_TTABLE) {
      lua_pushnil(L);
      while (lua_next(L, -2) != 0) {
        size_t klen, seglen;
        const char *key, *seg;
        if (lua_type(L, -2) == LUA_TSTRING) {
          key = lua_tolstring(L, -2, &klen);
          seg = key + pathlen + 1;
          if (klen > pathlen + 1 && memcmp(key, path, pathlen) == 0 && key[pathlen] == '.') {
            seglen = strcspn(seg, ".");
            if (seglen >= slen && memcmp(seg, stem, slen) == 0 && is_identifier(seg, seglen) &&
                !is_hidden(seg, stem)) {
              lua_pushlstring(L, key, pathlen + 1 + seglen);
              lua_pushboolean(L, 1);
              lua_rawset(L, set);
            }
          }
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
}

/* Pushes the module called name[0..len) for completion: package.loaded[name], or, for
 * one of ember's own modules that has not been loaded yet (in package.preload, name
 * "ember.*"), what require(name) returns, so that `ember.nn.` lists nn's members before
 * its first use. Pushes nil when there is no such module or it fails to load. */
static void push_module(lua_State *L, const char *name, size_t len)
{
  int type;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushlstring(L, name, len);
  lua_rawget(L, -2);
  lua_remove(L, -2);
  if (!lua_isnil(L, -1) || len <= 6 || memcmp(name, "ember.", 6) != 0)
    return;
  lua_pop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushlstring(L, name, len);
  type = lua_rawget(L, -2);
  lua_pop(L, 2);
  if (type != LUA_TFUNCTION) {
    lua_pushnil(L);
    return;
  }
  lua_getglobal(L, "require");
  lua_pushlstring(L, name, len);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
}

/* Protected worker: returns a set (table of name -> true) of completions for the word
 * in argument 1, e.g. "pri" -> print, "ember.te" -> ember.tensor, "t:si" -> t:size.
 * Reads tables raw and never runs metamethods; the only Lua code it runs is the first
 * load of one of ember's own modules named in the path (push_module). */
static int collect_completions(lua_State *L)
{
  const char *text = luaL_checkstring(L, 1);
  const char *dot = strrchr(text, '.'), *colon = strrchr(text, ':');
  const char *sep = (colon != NULL && (dot == NULL || colon > dot)) ? colon : dot;
  const char *p;
  int set, depth, methods;
  lua_settop(L, 1);
  lua_newtable(L);
  set = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  if (sep == NULL) {
    const char *const *kw;
    size_t len = strlen(text);
    add_matching_keys(L, set, set + 1, "", text, 0);
    for (kw = lua_keywords; *kw != NULL; kw++) {
      if (strncmp(*kw, text, len) == 0) {
        lua_pushboolean(L, 1);
        lua_setfield(L, set, *kw);
      }
    }
    lua_settop(L, set);
    return 1;
  }
  if (sep == text) {  /* "(expr):" or ".5": nothing to look up */
    lua_settop(L, set);
    return 1;
  }
  /* walk the path before the last separator (a.b.c), falling back to the modules
   * of that name (package.loaded, or loading one of ember's own: push_module) */
  for (p = text; p < sep; ) {
    const char *end = p;
    while (end < sep && *end != '.' && *end != ':')
      end++;
    if ((*end == ':' && end != sep) || !is_identifier(p, (size_t)(end - p))) {
      lua_settop(L, set);  /* not a name path (a ':' can only come last): no matches */
      return 1;
    }
    lua_pushlstring(L, p, (size_t)(end - p));
    raw_field(L);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      push_module(L, text, (size_t)(end - text));
    }
    p = end + 1;
  }
  methods = *sep == ':';
  if (!methods)
    add_module_names(L, set, text, (size_t)(sep - text), sep + 1);
  /* the prefix text to keep, including the separator */
  lua_pushlstring(L, text, (size_t)(sep - text) + 1);
  lua_insert(L, set + 1);  /* stack: set prefix value */
  for (depth = 0; depth < 32; depth++) {
    if (lua_type(L, -1) == LUA_TTABLE)
      add_matching_keys(L, set, lua_gettop(L), lua_tostring(L, set + 1), sep + 1, methods);
    if (!lua_getmetatable(L, -1))
      break;
    lua_pushliteral(L, "__index");
    lua_rawget(L, -2);
    if (lua_type(L, -1) == LUA_TFUNCTION)
      add_upvalue_tables(L, set, lua_gettop(L), lua_tostring(L, set + 1), sep + 1, methods);
    if (lua_type(L, -1) != LUA_TTABLE)
      break;
    lua_replace(L, -3);  /* the __index table takes the value's place */
    lua_pop(L, 1);       /* the metatable */
  }
  lua_settop(L, set);
  return 1;
}

/* Frees the candidate list of the completion in progress. */
static void free_candidates(void)
{
  size_t i;
  for (i = 0; i < g_ncandidates; i++)
    free(g_candidates[i]);
  free(g_candidates);
  g_candidates = NULL;
  g_ncandidates = 0;
}

/* qsort comparator for candidate strings. */
static int compare_strings(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Fills g_candidates with the completions of text (sorted), running the Lua part
 * protected so that nothing there can escape into libedit. */
static void gather_candidates(const char *text)
{
  lua_State *L = g_state;
  int top = lua_gettop(L);
  free_candidates();
  if (!lua_checkstack(L, 16))
    return;
  lua_pushcfunction(L, collect_completions);
  lua_pushstring(L, text);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TTABLE) {
    size_t cap = 0;
    lua_pushnil(L);
    while (lua_next(L, -2) != 0 && g_ncandidates < COMPLETION_MAX) {
      lua_pop(L, 1);
      if (g_ncandidates == cap) {
        size_t ncap = cap ? 2 * cap : 64;
        char **grown = realloc(g_candidates, ncap * sizeof *grown);
        if (grown == NULL)
          break;
        g_candidates = grown;
        cap = ncap;
      }
      if ((g_candidates[g_ncandidates] = strdup(lua_tostring(L, -1))) == NULL)
        break;
      g_ncandidates++;
    }
    if (g_ncandidates > 0)
      qsort(g_candidates, g_ncandidates, sizeof *g_candidates, compare_strings);
  }
  lua_settop(L, top);
}

/* libedit generator: hands out the gathered candidates one by one (malloc'd). */
static char *next_candidate(const char *text, int state)
{
  static size_t next = 0;
  (void)text;
  if (state == 0)
    next = 0;
  return next < g_ncandidates ? strdup(g_candidates[next++]) : NULL;
}

/* libedit completion hook: completes Lua names, never file names. */
static char **complete_word(const char *text, int start, int end)
{
  char **matches = NULL;
  (void)start;
  (void)end;
  rl_attempted_completion_over = 1;
  gather_candidates(text);
  if (g_ncandidates > 0)
    matches = rl_completion_matches(text, next_candidate);
  free_candidates();
  return matches;
}


/* ---------------------------------------------------------------------------------
 * Line input for the REPL
 * ------------------------------------------------------------------------------- */

enum { LINE_OK, LINE_EOF, LINE_INTERRUPTED };

/* libedit input hook: reads one character (decoding multi-byte ones), lets Ctrl-C end
 * the read, and handles window resizes and resumption after Ctrl-Z. */
static int read_terminal_char(FILE *in)
{
  static mbstate_t state;
  for (;;) {
    char byte;
    wchar_t wc;
    size_t r;
    ssize_t n = read(fileno(in), &byte, 1);
    if (n == 0)
      return EOF;
    if (n < 0) {
      if (errno != EINTR || g_line_interrupted) {
        memset(&state, 0, sizeof state);
        return EOF;
      }
      if (g_window_changed) {
        g_window_changed = 0;
        rl_resize_terminal();
      }
      if (g_continued) {
        g_continued = 0;
        rl_deprep_terminal();
        rl_prep_terminal(1);
        rl_forced_update_display();
      }
      continue;
    }
    r = mbrtowc(&wc, &byte, 1, &state);
    if (r == (size_t)-2)
      continue;  /* more bytes of this character to come */
    if (r == (size_t)-1) {
      memset(&state, 0, sizeof state);
      return (unsigned char)byte;
    }
    return (int)wc;
  }
}

/* Sets up libedit: our input hook (so Ctrl-C can end a read), no libedit signal
 * handling, Lua-aware word breaks and completion, and the history. */
static void editing_start(void)
{
  static char word_breaks[] = " \t\n\"\\'`@$><=;|&{}()[],+-*/%^#~";
  setlocale(LC_CTYPE, "");
  rl_readline_name = "ember";
  rl_catch_signals = 0;
  rl_getc_function = read_terminal_char;
  rl_basic_word_break_characters = word_breaks;
  rl_completer_word_break_characters = word_breaks;
  rl_attempted_completion_function = complete_word;
  rl_completion_append_character = '\0';
  rl_initialize();
}

/* Reads one line without libedit (stdin not a terminal): prompt on stdout. */
static char *read_plain_line(const char *prompt)
{
  char *buf = NULL;
  size_t cap = 0;
  ssize_t got;
  fputs(prompt, stdout);
  fflush(stdout);
  got = getline(&buf, &cap, stdin);
  if (got < 0) {
    free(buf);
    clearerr(stdin);
    return NULL;
  }
  if (got > 0 && buf[got - 1] == '\n')
    buf[got - 1] = '\0';
  return buf;
}

/* The REPL prompt: global _PROMPT / _PROMPT2 when they are strings, else the default. */
static const char *get_prompt(lua_State *L, int first)
{
  const char *prompt = first ? PROMPT_FIRST : PROMPT_MORE;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  lua_pushstring(L, first ? "_PROMPT" : "_PROMPT2");
  if (lua_rawget(L, -2) == LUA_TSTRING)
    prompt = lua_tostring(L, -1);
  lua_pop(L, 2);
  return prompt;  /* a string stored in _G stays alive while the prompt is shown */
}

/* Reads one line and pushes it. Returns LINE_OK, LINE_EOF (nothing pushed) or
 * LINE_INTERRUPTED (Ctrl-C: nothing pushed, the cursor moved to a new line). */
static int push_line(lua_State *L, int first)
{
  const char *prompt = get_prompt(L, first);
  char *line;
  int interrupted;
  fflush(stdout);
  fflush(stderr);
  g_line_interrupted = 0;
  g_reading_line = 1;
  clear_stale_interrupt(L);
  if (g_use_editline) {
    watch_terminal_signals(1);
    line = readline(prompt);
    watch_terminal_signals(0);
  } else {
    line = read_plain_line(prompt);
  }
  g_reading_line = 0;
  interrupted = g_line_interrupted;
  g_line_interrupted = 0;
  if (interrupted) {
    free(line);
    fputc('\n', stdout);
    fflush(stdout);
    return LINE_INTERRUPTED;
  }
  if (line == NULL)
    return LINE_EOF;
  lua_pushstring(L, line);
  free(line);
  return LINE_OK;
}

/* Whether the string is empty or only white space. */
static int is_blank(const char *s)
{
  for (; *s != '\0'; s++)
    if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n' && *s != '\f' && *s != '\v')
      return 0;
  return 1;
}


/* ---------------------------------------------------------------------------------
 * The REPL
 * ------------------------------------------------------------------------------- */

enum { STATEMENT_CANCELLED = -2, STATEMENT_EOF = -1 };

/* Whether a compile status/message means "the chunk is unfinished" (ends in <eof>);
 * pops the message in that case. */
static int is_incomplete(lua_State *L, int status)
{
  static const char mark[] = "<eof>";
  const size_t marklen = sizeof mark - 1;
  if (status == LUA_ERRSYNTAX) {
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    if (msg != NULL && len >= marklen && strcmp(msg + len - marklen, mark) == 0) {
      lua_pop(L, 1);
      return 1;
    }
  }
  return 0;
}

/* Tries to compile the line at index 1 as "return <line>", so expressions print their
 * values. Leaves the function on top on success, nothing on failure. */
static int compile_as_expression(lua_State *L)
{
  const char *line = lua_tostring(L, 1);
  const char *code = lua_pushfstring(L, "return %s;", line);
  int status = luaL_loadbuffer(L, code, strlen(code), "=stdin");
  lua_remove(L, -2);  /* the code string */
  if (status != LUA_OK)
    lua_pop(L, 1);
  return status;
}

/* Compiles the text at index 1 as statements, reading more lines (">> ") while it is
 * unfinished. Leaves the function or the error message on top; returns the status, or
 * STATEMENT_CANCELLED after Ctrl-C. */
static int compile_statements(lua_State *L)
{
  for (;;) {
    size_t len;
    const char *code = lua_tolstring(L, 1, &len);
    int status = luaL_loadbuffer(L, code, len, "=stdin");
    int got;
    if (!is_incomplete(L, status))
      return status;
    got = push_line(L, 0);
    if (got == LINE_INTERRUPTED)
      return STATEMENT_CANCELLED;
    if (got == LINE_EOF)  /* report the unfinished chunk */
      return luaL_loadbuffer(L, code, len, "=stdin");
    if (!is_blank(lua_tostring(L, -1)))
      history_add(lua_tostring(L, -1));
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);
    lua_concat(L, 3);  /* previous text .. "\n" .. new line, back at index 1 */
  }
}

/* Reads and compiles one complete statement. Returns LUA_OK with the function on the
 * stack, an error status with the message on the stack, STATEMENT_EOF or
 * STATEMENT_CANCELLED (stack empty for those). */
static int read_statement(lua_State *L)
{
  int status, got;
  lua_settop(L, 0);
  do {
    lua_settop(L, 0);
    got = push_line(L, 1);
    if (got == LINE_EOF)
      return STATEMENT_EOF;
  } while (got == LINE_INTERRUPTED || is_blank(lua_tostring(L, 1)));
  history_add(lua_tostring(L, 1));
  status = compile_as_expression(L);
  if (status != LUA_OK)
    status = compile_statements(L);
  if (status == STATEMENT_CANCELLED)
    lua_settop(L, 0);
  else
    lua_remove(L, 1);  /* the source text */
  return status;
}

/* Whether the value at idx is a table that does not print itself (no __tostring and
 * no __name in its metatable): a result such as t:stats() or ember.memory(). */
static int is_plain_table(lua_State *L, int idx)
{
  int plain;
  if (lua_type(L, idx) != LUA_TTABLE)
    return 0;
  if (luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  plain = luaL_getmetafield(L, idx, "__name") == LUA_TNIL;
  if (!plain)
    lua_pop(L, 1);
  return plain;
}

/* Pushes the text the REPL shows for the value at idx: tostring's, except that a plain
 * table is written out by ember.pretty.format ({max = 2.7, mean = -0.06, ...}); should
 * that fail, tostring's "table: 0x..." is shown. */
static const char *push_value_text(lua_State *L, int idx, size_t *len)
{
  idx = lua_absindex(L, idx);
  if (is_plain_table(L, idx)) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "ember.pretty");
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TTABLE) {
      lua_getfield(L, -1, "format");
      lua_remove(L, -2);
      lua_pushvalue(L, idx);
      if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING)
        return lua_tolstring(L, -1, len);
    }
    lua_pop(L, 1);
  }
  return luaL_tolstring(L, idx, len);
}

/* Protected worker: prints all its arguments tab-separated, each as push_value_text
 * writes it. */
static int print_values(lua_State *L)
{
  int n = lua_gettop(L), i;
  for (i = 1; i <= n; i++) {
    size_t len;
    const char *s = push_value_text(L, i, &len);
    if (i > 1)
      fputc('\t', stdout);
    fwrite(s, 1, len, stdout);
    lua_pop(L, 1);
  }
  fputc('\n', stdout);
  fflush(stdout);
  return 0;
}

/* Prints the values a REPL statement returned (all values on the stack). */
static void print_results(lua_State *L)
{
  int n = lua_gettop(L);
  if (n == 0)
    return;
  if (!lua_checkstack(L, LUA_MINSTACK)) {
    print_message("too many results to print", 0);
    lua_settop(L, 0);
    return;
  }
  lua_pushcfunction(L, print_values);
  lua_insert(L, 1);
  report(L, docall(L, n, 0), 0);
}

/* Prints the start-up banner. */
static void print_banner(void)
{
  fputs("ember " EMBER_VERSION " (" EMBER_LUA_VERSION ") \xe2\x80\x94 "
        "type ember.help() or Ctrl-D to quit\n", stdout);
  fflush(stdout);
}

/* The read-eval-print loop; returns at end of input (Ctrl-D). */
static void run_repl(lua_State *L)
{
  g_use_editline = isatty(STDIN_FILENO);
  if (g_use_editline) {
    editing_start();
    history_load();
  }
  print_banner();
  for (;;) {
    int status = read_statement(L);
    if (status == STATEMENT_EOF)
      break;
    if (status == STATEMENT_CANCELLED)
      continue;
    if (status == LUA_OK)
      status = docall(L, 0, LUA_MULTRET);
    if (status == LUA_OK)
      print_results(L);
    else
      report(L, status, 0);
  }
  lua_settop(L, 0);
  fputc('\n', stdout);
  fflush(stdout);
}


/* ---------------------------------------------------------------------------------
 * Command line: options, arg table, scripts, subcommands
 * ------------------------------------------------------------------------------- */

enum { HAS_E = 1, HAS_I = 2, HAS_VERSION = 4, HAS_HELP = 8, BAD_OPTION = 16 };

/* Scans the options (everything before the script name). Sets *script to the index of
 * the script ("-" for stdin) or 0 when there is none; *bad to the offending option. */
static int collect_options(int argc, char **argv, int *script, int *bad)
{
  int flags = 0, i;
  *script = 0;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || strcmp(a, "-") == 0) {
      *script = i;
      return flags;
    }
    if (strcmp(a, "--") == 0) {
      *script = i + 1 < argc ? i + 1 : 0;
      return flags;
    }
    if (strcmp(a, "--version") == 0 || strcmp(a, "-v") == 0) {
      flags |= HAS_VERSION;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      flags |= HAS_HELP;
    } else if (strcmp(a, "-i") == 0) {
      flags |= HAS_I;
    } else if (strncmp(a, "-e", 2) == 0) {
      flags |= HAS_E;
      if (a[2] == '\0') {
        if (++i >= argc) {
          *bad = i - 1;
          return flags | BAD_OPTION;
        }
      }
    } else {
      *bad = i;
      return flags | BAD_OPTION;
    }
  }
  return flags;
}

/* Creates the global `arg` like lua.c: arg[0] = script (or the program when there is
 * none), arg[1..] = the script's arguments, negative indices = program and options. */
static void create_arg_table(lua_State *L, int argc, char **argv, int script)
{
  int i;  /* with no script (script == 0), arg[0] is the program itself */
  lua_createtable(L, argc - script - 1 > 0 ? argc - script - 1 : 0, script + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

/* Runs every -e CODE in command-line order; stops at the first failure. */
static int run_e_options(lua_State *L, int argc, char **argv, int script)
{
  int last = script > 0 ? script : argc, i;
  for (i = 1; i < last; i++) {
    const char *code;
    int status;
    if (strncmp(argv[i], "-e", 2) != 0)
      continue;
    code = argv[i][2] != '\0' ? argv[i] + 2 : argv[++i];
    status = luaL_loadbuffer(L, code, strlen(code), "=(command line)");
    if (status == LUA_OK)
      status = docall(L, 0, 0);
    if (report(L, status, 1) != LUA_OK)
      return status;
  }
  return LUA_OK;
}

/* Runs the script argv[script] ("-" = stdin) with argv[script+1..] as `...`. */
static int run_script(lua_State *L, int argc, char **argv, int script)
{
  const char *name = argv[script];
  int status, n = 0, i;
  if (strcmp(name, "-") == 0 && strcmp(argv[script - 1], "--") != 0)
    name = NULL;  /* stdin */
  status = luaL_loadfile(L, name);
  if (status == LUA_OK) {
    luaL_checkstack(L, argc - script, "too many arguments to script");
    for (i = script + 1; i < argc; i++, n++)
      lua_pushstring(L, argv[i]);
    status = docall(L, n, 0);
  }
  return report(L, status, 1);
}

/* Whether argv[1] names a subcommand handled by ember.cli. */
static int is_subcommand(const char *a)
{
  return strcmp(a, "run") == 0 || strcmp(a, "sample") == 0 || strcmp(a, "sweep") == 0;
}

/* `ember run|sample|sweep args...`: calls require('ember.cli').main(command, {args}).
 * Returns the exit status. */
static int run_subcommand(lua_State *L, int argc, char **argv)
{
  const char *command = argv[1];
  int status, i, code;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "ember.cli");
  status = docall(L, 1, 1);
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (msg != NULL && strstr(msg, "module 'ember.cli' not found") != NULL) {
      fprintf(stderr, "%s: the '%s' command is not available (module ember.cli missing)\n",
              progname, command);
      lua_pop(L, 1);
      return EXIT_FAILURE;
    }
    report(L, status, 1);
    return failure_exit_status();
  }
  if (lua_type(L, -1) != LUA_TTABLE || lua_getfield(L, -1, "main") != LUA_TFUNCTION) {
    fprintf(stderr, "%s: the '%s' command is not available (ember.cli has no main)\n",
            progname, command);
    lua_settop(L, 0);
    return EXIT_FAILURE;
  }
  lua_remove(L, -2);  /* the module */
  lua_pushstring(L, command);
  lua_createtable(L, argc > 2 ? argc - 2 : 0, 0);
  for (i = 2; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  status = docall(L, 2, 1);
  if (report(L, status, 1) != LUA_OK)
    return failure_exit_status();
  if (lua_isnil(L, -1))
    code = EXIT_SUCCESS;
  else if (lua_isboolean(L, -1))
    code = lua_toboolean(L, -1) ? EXIT_SUCCESS : EXIT_FAILURE;
  else {
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    code = isint ? (int)v : EXIT_SUCCESS;
  }
  lua_pop(L, 1);
  return code;
}

/* Opens the standard libraries and the built-in ember library: package.preload.ember is
 * luaopen_ember (so require never loads a separate ember.so) and global ember = require
 * 'ember'. */
static void open_libraries(lua_State *L)
{
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_ember);
  lua_setfield(L, -2, "ember");
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "ember");
  lua_call(L, 1, 1);
  lua_setglobal(L, "ember");
}

/* Protected main: does everything that touches Lua. Argument 1 is argc, 2 is argv;
 * returns the process exit status. */
static int protected_main(lua_State *L)
{
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  int script = 0, bad = 0, flags, status;
  lua_settop(L, 0);
  luaL_checkversion(L);

  if (argc >= 2 && is_subcommand(argv[1])) {
    struct sigaction term;
    open_libraries(L);
    register_host_module(L);
    install_sigint_handler();
    if (sigaction(SIGTERM, NULL, &term) == 0 && term.sa_handler != SIG_IGN)
      set_handler(SIGTERM, on_sigterm);
    lua_pushinteger(L, run_subcommand(L, argc, argv));
    return 1;
  }
  flags = collect_options(argc, argv, &script, &bad);
  if (flags & BAD_OPTION) {
    if (strncmp(argv[bad], "-e", 2) == 0)
      fprintf(stderr, "%s: '-e' needs an argument\n", progname);
    else
      fprintf(stderr, "%s: unrecognized option '%s'\n", progname, argv[bad]);
    print_usage(stderr);
    lua_pushinteger(L, EXIT_FAILURE);
    return 1;
  }
  if (flags & HAS_HELP) {
    print_usage(stdout);
    lua_pushinteger(L, EXIT_SUCCESS);
    return 1;
  }
  if (flags & HAS_VERSION) {
    fputs("ember " EMBER_VERSION "\n", stdout);
    lua_pushinteger(L, EXIT_SUCCESS);
    return 1;
  }

  open_libraries(L);
  create_arg_table(L, argc, argv, script);
  install_sigint_handler();
  status = run_e_options(L, argc, argv, script);
  if (status == LUA_OK && script > 0)
    status = run_script(L, argc, argv, script);
  if (flags & HAS_I) {
    run_repl(L);  /* after an error too: the REPL is for looking at what went wrong */
    status = LUA_OK;
  } else if (status == LUA_OK && script == 0 && !(flags & HAS_E)) {
    if (isatty(STDIN_FILENO)) {
      run_repl(L);
    } else {
      status = luaL_loadfile(L, NULL);
      if (status == LUA_OK)
        status = docall(L, 0, 0);
      report(L, status, 1);
    }
  }
  lua_pushinteger(L, status == LUA_OK ? EXIT_SUCCESS : failure_exit_status());
  return 1;
}

/* Creates the Lua state, runs protected_main and closes the state (running finalizers). */
int main(int argc, char **argv)
{
  lua_State *L = luaL_newstate();
  int status, code;
  if (L == NULL) {
    print_message("cannot create state: not enough memory", 1);
    return EXIT_FAILURE;
  }
  g_state = L;
  /* The collector in generational mode, as lua5.4's own interpreter sets it (a bare
   * state starts incremental): a step's short-lived tensors die in cheap young
   * collections, where each large storage's GCSTEP debt (em_lua_gc_account) would
   * otherwise run an incremental step over the whole heap (B4's step: 2.71 -> 2.39 ms). */
  lua_gc(L, LUA_GCGEN, 0, 0);
  lua_pushcfunction(L, protected_main);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  status = lua_pcall(L, 2, 1, 0);
  if (status == LUA_OK) {
    code = (int)lua_tointeger(L, -1);
  } else {
    report(L, status, 1);
    code = EXIT_FAILURE;
  }
  g_state = NULL;
  lua_close(L);
  fflush(stdout);
  return code;
}
