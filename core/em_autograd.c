/* em_autograd.c — recording nodes and walking them backwards. */
#include "em_autograd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The backward functions, defined next to each op's kernel. */
#define EM_OP(name) int em_backward_##name(em_node *, em_tensor *, em_tensor **);
#include "em_ops.def"
#undef EM_OP

const em_opdef em_opdefs[EM_OP_COUNT] = {
#define EM_OP(name) [EM_OP_##name] = {#name, em_backward_##name},
#include "em_ops.def"
#undef EM_OP
};

static _Thread_local bool grad_disabled;
static const em_opdef *debug_broken_op;

int em_autograd_debug_break(const char *name) {
    if (!name) {
        debug_broken_op = NULL;
        return EM_OK;
    }
    for (int i = 0; i < EM_OP_COUNT; i++)
        if (!strcmp(em_opdefs[i].name, name)) {
            debug_broken_op = &em_opdefs[i];
            return EM_OK;
        }
    return em_error_set("debug_break_backward: no op named '%s'", name);
}

bool em_grad_enabled(void) { return !grad_disabled; }
void em_set_grad_enabled(bool on) { grad_disabled = !on; }

static bool needs_grad(const em_tensor *t) { return t && t->requires_grad; }

static em_node *record(const em_opdef *op, em_tensor *out, int n, em_tensor *const *inputs);

em_node *em_record(em_op_id op, em_tensor *out, int n, em_tensor *const *inputs) {
    return record(&em_opdefs[op], out, n, inputs);
}

em_node *em_record_external(const em_opdef *op, em_tensor *out, int n, em_tensor *const *inputs) {
    return op && op->backward ? record(op, out, n, inputs) : NULL;
}

static em_node *record(const em_opdef *op, em_tensor *out, int n, em_tensor *const *inputs) {
    if (grad_disabled || !out) return NULL;
    bool any = false;
    for (int i = 0; i < n; i++) any |= needs_grad(inputs[i]);
    if (!any) return NULL;
    em_node *node = calloc(1, sizeof *node);
    em_edge *edges = calloc((size_t)n, sizeof *edges);
    if (!node || !edges) {
        /* Out of memory while recording: the result simply is not tracked. */
        free(node);
        free(edges);
        return NULL;
    }
    node->refcount = 1;
    node->op = op;
    node->n_edges = n;
    node->edges = edges;
    for (int i = 0; i < n; i++) {
        em_tensor *in = inputs[i];
        if (!in) continue;
        edges[i].ndim = in->ndim;
        memcpy(edges[i].shape, in->shape, sizeof in->shape);
        if (!in->requires_grad) continue;
        if (in->grad_fn) {
            edges[i].node = in->grad_fn;
            in->grad_fn->refcount++;
        } else {
            edges[i].leaf = em_tensor_retain(in);
        }
    }
    out->requires_grad = true;
    em_node_release(out->grad_fn);
    out->grad_fn = node;
    return node;
}

void em_node_save(em_node *node, em_tensor *t) {
    if (!node || node->n_saved >= EM_NODE_MAX_SAVED) return;
    node->saved[node->n_saved] = em_tensor_retain(t);
    node->saved_version[node->n_saved] = t ? t->storage->version : 0;
    node->n_saved++;
}

static void node_free_saved(em_node *node) {
    for (int i = 0; i < node->n_saved; i++) {
        em_tensor_release(node->saved[i]);
        node->saved[i] = NULL;
    }
    node->freed = true;
}

/* Releases nodes iteratively: a long chain (an RNN, a long loop) must not
 * recurse once per node. */
void em_node_release(em_node *node) {
    em_node *stack_small[64];
    em_node **stack = stack_small;
    size_t cap = 64, top = 0;
    if (!node) return;
    stack[top++] = node;
    while (top > 0) {
        em_node *n = stack[--top];
        if (--n->refcount > 0) continue;
        for (int i = 0; i < n->n_edges; i++) {
            em_tensor_release(n->edges[i].leaf);
            em_node *next = n->edges[i].node;
            if (!next) continue;
            if (top == cap) {
                em_node **bigger = malloc(cap * 2 * sizeof *bigger);
                if (!bigger) { /* cannot grow: fall back to recursion */
                    em_node_release(next);
                    continue;
                }
                memcpy(bigger, stack, top * sizeof *stack);
                if (stack != stack_small) free(stack);
                stack = bigger;
                cap *= 2;
            }
            stack[top++] = next;
        }
        node_free_saved(n);
        em_tensor_release(n->grad_accum);
        free(n->edges);
        free(n);
    }
    if (stack != stack_small) free(stack);
}

const char *em_node_name(const em_node *node) {
    static _Thread_local char buf[48];
    const char *base = node->op->name;
    if (node->op == &em_opdefs[EM_OP_unary]) base = em_unary_name((em_unary_op)node->iarg[0]);
    else if (node->op == &em_opdefs[EM_OP_binary] || node->op == &em_opdefs[EM_OP_binary_scalar] ||
             node->op == &em_opdefs[EM_OP_scalar_binary])
        base = em_binary_name((em_binary_op)node->iarg[0]);
    else if (node->op == &em_opdefs[EM_OP_reduce]) base = em_reduce_name((em_reduce_op)node->iarg[0]);
    snprintf(buf, sizeof buf, "%s", base);
    return buf;
}

int em_set_requires_grad(em_tensor *t, bool on) {
    if (t->grad_fn)
        return em_error_set("requires_grad: only a leaf tensor (not the result of an op) can be "
                            "marked; use detach() first");
    t->requires_grad = on;
    return EM_OK;
}

/* ---- the backward walk ----------------------------------------------- */

typedef struct {
    em_node **items;
    size_t count, cap;
} node_list;

static int list_push(node_list *l, em_node *n) {
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        em_node **items = realloc(l->items, cap * sizeof *items);
        if (!items) return em_error_set("backward: out of memory");
        l->items = items;
        l->cap = cap;
    }
    l->items[l->count++] = n;
    return EM_OK;
}

static uint64_t visit_epoch;

/* Post-order DFS from root: parents after children, so reversing the list is a
 * topological order. Also counts each node's incoming dependencies. */
static int topo_sort(em_node *root, node_list *order) {
    node_list stack = {0};
    uint64_t mark = ++visit_epoch * 2; /* mark = on stack, mark + 1 = done */
    int rc = EM_OK;
    root->dependencies = 0;
    root->visit_mark = mark;
    if (list_push(&stack, root)) return EM_ERR;
    /* Each stack entry is revisited until all its edges are done. */
    while (stack.count > 0 && rc == EM_OK) {
        em_node *n = stack.items[stack.count - 1];
        bool pushed = false;
        for (int i = 0; i < n->n_edges; i++) {
            em_node *next = n->edges[i].node;
            if (!next) continue;
            if (next->visit_mark != mark && next->visit_mark != mark + 1) {
                next->visit_mark = mark;
                next->dependencies = 0;
                if ((rc = list_push(&stack, next))) break;
                pushed = true;
                break;
            }
        }
        if (!pushed && rc == EM_OK) {
            stack.count--;
            n->visit_mark = mark + 1;
            rc = list_push(order, n);
        }
    }
    free(stack.items);
    if (rc) return rc;
    for (size_t k = 0; k < order->count; k++) {
        em_node *n = order->items[k];
        for (int i = 0; i < n->n_edges; i++)
            if (n->edges[i].node) n->edges[i].node->dependencies++;
    }
    return EM_OK;
}

/* acc += g, out of place when recording (so the sum is differentiable). */
static int accumulate(em_tensor **acc, em_tensor *g) {
    if (!*acc) {
        *acc = em_tensor_retain(g);
        return EM_OK;
    }
    em_tensor *sum = em_binary(EM_BIN_ADD, *acc, g);
    if (!sum) return EM_ERR;
    em_tensor_release(*acc);
    *acc = sum;
    return EM_OK;
}

/* Adds g into a leaf's .grad: in place when not recording and safe, else out
 * of place. The first gradient is copied unless it is private and contiguous. */
static int accumulate_leaf(em_tensor *leaf, em_tensor *g, bool create_graph) {
    if (!leaf->grad) {
        if (!create_graph && g->refcount == 1 && g->storage->refcount == 1 && !g->grad_fn &&
            em_tensor_is_contiguous(g) && g->offset == 0) {
            leaf->grad = em_tensor_retain(g);
            return EM_OK;
        }
        leaf->grad = create_graph ? em_tensor_retain(g) : em_clone(g);
        if (leaf->grad && !create_graph) {
            leaf->grad->requires_grad = false;
        }
        return leaf->grad ? EM_OK : EM_ERR;
    }
    if (create_graph || leaf->grad->grad_fn) {
        em_tensor *sum = em_binary(EM_BIN_ADD, leaf->grad, g);
        if (!sum) return EM_ERR;
        em_tensor_release(leaf->grad);
        leaf->grad = sum;
        return EM_OK;
    }
    return em_binary_(EM_BIN_ADD, leaf->grad, g);
}

typedef struct {
    int n;
    em_tensor *const *inputs; /* em_grad's targets, or NULL for em_backward */
    em_tensor **grads;
} grad_capture;

static int capture_leaf(grad_capture *cap, em_tensor *leaf, em_tensor *g) {
    for (int k = 0; k < cap->n; k++)
        if (cap->inputs[k] == leaf && accumulate(&cap->grads[k], g)) return EM_ERR;
    return EM_OK;
}

static em_grad_ready_fn hook_ready;
static em_backward_done_fn hook_done;
static void *hook_ctx;

void em_set_grad_hooks(em_grad_ready_fn ready, em_backward_done_fn done, void *ctx) {
    hook_ready = ready;
    hook_done = done;
    hook_ctx = ctx;
}

/* The edges of a processed node into leaves: one gradient fewer to wait for. */
static void leaf_edges_done(em_node *n) {
    for (int i = 0; i < n->n_edges; i++) {
        em_tensor *leaf = n->edges[i].leaf;
        if (leaf && --leaf->pending_grads == 0 && leaf->grad) hook_ready(leaf, hook_ctx);
    }
}

static int run_backward(em_tensor *root, em_tensor *grad, bool retain_graph, bool create_graph,
                        grad_capture *cap) {
    char a[EM_SHAPE_STR_MAX], b[EM_SHAPE_STR_MAX];
    if (!root->requires_grad)
        return em_error_set("backward: the tensor does not require grad (no parameter or input "
                            "that requires grad led to it)");
    em_tensor *seed = NULL;
    if (grad) {
        if (!em_same_shape(grad, root))
            return em_error_set("backward: gradient shape %s does not match the tensor's %s",
                                em_shape_str(a, sizeof a, grad->ndim, grad->shape),
                                em_shape_str(b, sizeof b, root->ndim, root->shape));
        seed = em_tensor_retain(grad);
    } else {
        if (root->numel != 1)
            return em_error_set("backward: a gradient is needed for a non-scalar tensor %s "
                                "(pass one, or reduce it to a scalar first)",
                                em_shape_str(a, sizeof a, root->ndim, root->shape));
        float v = em_tensor_data(root)[0];
        if (!isfinite(v))
            return em_error_set("backward: the loss is %s", isnan(v) ? "nan" : "inf");
        seed = em_tensor_full(root->ndim, root->shape, 1.0f);
        if (!seed) return EM_ERR;
    }
    if (!root->grad_fn) { /* the root is itself a leaf */
        int rc = cap ? capture_leaf(cap, root, seed) : accumulate_leaf(root, seed, create_graph);
        em_tensor_release(seed);
        return rc;
    }

    node_list order = {0};
    if (topo_sort(root->grad_fn, &order)) {
        em_tensor_release(seed);
        free(order.items);
        return EM_ERR;
    }
    bool was_enabled = em_grad_enabled();
    em_set_grad_enabled(create_graph);
    int rc = EM_OK;
    root->grad_fn->grad_accum = seed;
    /* gradient-ready hooks: how many edges lead into each leaf */
    const bool hooks = !cap && hook_ready;
    if (hooks) {
        for (size_t k = 0; k < order.count; k++)
            for (int i = 0; i < order.items[k]->n_edges; i++)
                if (order.items[k]->edges[i].leaf) order.items[k]->edges[i].leaf->pending_grads = 0;
        for (size_t k = 0; k < order.count; k++)
            for (int i = 0; i < order.items[k]->n_edges; i++)
                if (order.items[k]->edges[i].leaf) order.items[k]->edges[i].leaf->pending_grads++;
    }

    for (size_t k = order.count; k-- > 0 && rc == EM_OK;) {
        em_node *n = order.items[k];
        em_tensor *g = n->grad_accum;
        n->grad_accum = NULL;
        if (!g) { /* nothing flowed here */
            if (hooks) leaf_edges_done(n);
            continue;
        }
        if (cap)
            for (int t = 0; t < cap->n; t++)
                if (cap->inputs[t]->grad_fn == n && accumulate(&cap->grads[t], g)) rc = EM_ERR;
        if (rc == EM_OK && n->freed)
            rc = em_error_set("backward: the graph through '%s' was already freed by an earlier "
                              "backward; pass retain_graph=true to the first backward",
                              em_node_name(n));
        for (int s = 0; s < n->n_saved && rc == EM_OK; s++)
            if (n->saved[s] && n->saved[s]->storage->version != n->saved_version[s])
                rc = em_error_set("backward: a tensor saved by '%s' was modified in place after "
                                  "it was used; clone it before changing it", em_node_name(n));
        em_tensor *gin_small[8] = {0};
        em_tensor **gin = n->n_edges <= 8 ? gin_small : calloc((size_t)n->n_edges, sizeof *gin);
        if (rc == EM_OK && !gin) rc = em_error_set("backward: out of memory");
        if (rc == EM_OK && n->op->backward(n, g, gin) != EM_OK) {
            char msg[900];
            snprintf(msg, sizeof msg, "%s", em_error_message());
            rc = em_error_set("backward of %s: %s", em_node_name(n), msg);
        }
        for (int i = 0; gin && i < n->n_edges; i++) {
            em_tensor *gi = gin[i];
            if (!gi) continue;
            if (n->op == debug_broken_op) { /* the test hook: a wrong gradient */
                em_tensor *twice = em_binary_scalar(EM_BIN_MUL, gi, 2.0f);
                em_tensor_release(gi);
                gin[i] = gi = twice;
                if (!gi) { rc = EM_ERR; continue; }
            }
            em_edge *e = &n->edges[i];
            if (rc == EM_OK && (gi->ndim != e->ndim ||
                                memcmp(gi->shape, e->shape, (size_t)e->ndim * sizeof(int64_t))))
                rc = em_error_set("backward of %s: gradient %s for input %d does not match its "
                                  "shape %s (an internal error)", n->op->name,
                                  em_shape_str(a, sizeof a, gi->ndim, gi->shape), i + 1,
                                  em_shape_str(b, sizeof b, e->ndim, e->shape));
            if (rc == EM_OK) {
                if (e->node)
                    rc = accumulate(&e->node->grad_accum, gi);
                else if (e->leaf)
                    rc = cap ? capture_leaf(cap, e->leaf, gi)
                             : accumulate_leaf(e->leaf, gi, create_graph);
            }
            em_tensor_release(gi);
        }
        if (gin != gin_small) free(gin);
        em_tensor_release(g);
        if (!retain_graph) node_free_saved(n);
        if (hooks && rc == EM_OK) leaf_edges_done(n);
    }
    if (!cap && hook_done) hook_done(rc, hook_ctx);
    /* On error, drop partial gradients still parked on nodes. */
    for (size_t k = 0; k < order.count; k++) {
        em_tensor_release(order.items[k]->grad_accum);
        order.items[k]->grad_accum = NULL;
    }
    em_set_grad_enabled(was_enabled);
    free(order.items);
    return rc;
}

int em_backward(em_tensor *root, em_tensor *grad, bool retain_graph, bool create_graph) {
    return run_backward(root, grad, retain_graph || create_graph, create_graph, NULL);
}

int em_grad(em_tensor *root, em_tensor *grad, int n, em_tensor *const *inputs,
            em_tensor **grads, bool retain_graph, bool create_graph) {
    for (int i = 0; i < n; i++) {
        grads[i] = NULL;
        if (!inputs[i]->requires_grad)
            return em_error_set("grad: input %d does not require grad", i + 1);
    }
    grad_capture cap = {n, inputs, grads};
    int rc = run_backward(root, grad, retain_graph || create_graph, create_graph, &cap);
    if (rc)
        for (int i = 0; i < n; i++) {
            em_tensor_release(grads[i]);
            grads[i] = NULL;
        }
    return rc;
}
