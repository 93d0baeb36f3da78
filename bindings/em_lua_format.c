/* em_lua_format.c — printing a tensor: nested rows like PyTorch, abbreviated
 * with "..." past 1000 elements (3 at each edge), then a line with its shape
 * (and autograd state), as Torch7 did:
 *     [[ 1.0000,  2.5000],
 *      [ 3.0000,  4.0000]]
 *     ember.Tensor [2 x 2], requires_grad
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "em_autograd.h"
#include "em_lua.h"

#define EDGE 3
#define SUMMARIZE_ABOVE 1000

typedef struct {
    char fmt[16];
    int width;
    bool summarize;
} number_style;

/* Chooses one format for all shown values: integers, fixed or scientific. */
static number_style choose_style(const em_tensor *t) {
    number_style s = {"%.0f", 1, t->numel > SUMMARIZE_ABOVE};
    const float *d = em_tensor_data(t);
    bool all_int = true;
    double maxabs = 0, minabs = INFINITY;
    int64_t idx[EM_MAX_DIMS] = {0};
    for (int64_t k = 0; k < t->numel; k++) {
        int64_t off = 0;
        for (int i = 0; i < t->ndim; i++) off += idx[i] * t->strides[i];
        float v = d[off];
        if (isfinite(v)) {
            if (v != floorf(v)) all_int = false;
            double a = fabs(v);
            if (a > maxabs) maxabs = a;
            if (a > 0 && a < minabs) minabs = a;
        }
        for (int i = t->ndim - 1; i >= 0; i--) {
            if (++idx[i] < t->shape[i]) break;
            idx[i] = 0;
        }
        if (k > 100000) break; /* a sample is enough to pick a style */
    }
    if (all_int && maxabs < 1e9) {
        snprintf(s.fmt, sizeof s.fmt, "%%.0f");
        s.width = maxabs > 0 ? (int)floor(log10(maxabs)) + 1 : 1;
    } else if (maxabs >= 1e5 || (minabs < 1e-4 && minabs > 0)) {
        snprintf(s.fmt, sizeof s.fmt, "%%.4e");
        s.width = 10;
    } else {
        snprintf(s.fmt, sizeof s.fmt, "%%.4f");
        s.width = (maxabs >= 1 ? (int)floor(log10(maxabs)) + 1 : 1) + 5;
    }
    /* width = the longest formatted value (a sample of large tensors) */
    s.width = 1;
    memset(idx, 0, sizeof idx);
    for (int64_t k = 0; k < t->numel && k <= 20000; k++) {
        int64_t off = 0;
        for (int i = 0; i < t->ndim; i++) off += idx[i] * t->strides[i];
        char num[64];
        float v = d[off];
        int len = isfinite(v) ? snprintf(num, sizeof num, s.fmt, (double)(v == 0 ? 0.0f : v))
                              : (isnan(v) ? 3 : (v > 0 ? 3 : 4));
        if (len > s.width) s.width = len;
        for (int i = t->ndim - 1; i >= 0; i--) {
            if (++idx[i] < t->shape[i]) break;
            idx[i] = 0;
        }
    }
    return s;
}

static void add_number(luaL_Buffer *b, const number_style *s, float v) {
    char num[64], padded[80];
    if (isnan(v)) snprintf(num, sizeof num, "nan");
    else if (isinf(v)) snprintf(num, sizeof num, v > 0 ? "inf" : "-inf");
    else snprintf(num, sizeof num, s->fmt, (double)(v == 0 ? 0.0f : v)); /* no "-0" */
    snprintf(padded, sizeof padded, "%*s", s->width, num);
    luaL_addstring(b, padded);
}

/* Writes dim `dim` of t starting at offset `off`; indent = column of '['. */
static void add_dim(luaL_Buffer *b, const em_tensor *t, const number_style *s, int dim,
                    int64_t off, int indent) {
    const float *d = em_tensor_data(t);
    int64_t n = t->shape[dim];
    luaL_addchar(b, '[');
    for (int64_t i = 0; i < n; i++) {
        if (s->summarize && n > 2 * EDGE && i == EDGE) {
            if (dim == t->ndim - 1) {
                luaL_addstring(b, "..., ");
            } else {
                luaL_addstring(b, "...,\n");
                for (int k = 0; k < indent + 1; k++) luaL_addchar(b, ' ');
            }
            i = n - EDGE - 1;
            continue;
        }
        int64_t o = off + i * t->strides[dim];
        if (dim == t->ndim - 1) {
            add_number(b, s, d[o]);
        } else {
            add_dim(b, t, s, dim + 1, o, indent + 1);
        }
        if (i < n - 1) {
            luaL_addchar(b, ',');
            if (dim == t->ndim - 1) luaL_addchar(b, ' ');
            if (dim < t->ndim - 1) {
                for (int k = dim; k < t->ndim - 1; k++) luaL_addchar(b, '\n');
                for (int k = 0; k < indent + 1; k++) luaL_addchar(b, ' ');
            }
        }
    }
    luaL_addchar(b, ']');
}

void em_lua_push_tostring(lua_State *L, em_tensor *t) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    number_style s = choose_style(t);
    if (t->ndim == 0) {
        add_number(&b, &s, em_tensor_data(t)[0]);
    } else if (t->numel == 0) {
        luaL_addstring(&b, "[]");
    } else {
        add_dim(&b, t, &s, 0, 0, 0);
    }
    char shape[EM_SHAPE_STR_MAX];
    luaL_addstring(&b, "\nember.Tensor ");
    luaL_addstring(&b, em_shape_str(shape, sizeof shape, t->ndim, t->shape));
    if (t->grad_fn) {
        luaL_addstring(&b, ", grad_fn=");
        luaL_addstring(&b, em_node_name(t->grad_fn));
    } else if (t->requires_grad) {
        luaL_addstring(&b, ", requires_grad");
    }
    luaL_pushresult(&b);
}
