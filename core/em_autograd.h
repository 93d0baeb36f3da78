/* em_autograd.h — reverse-mode automatic differentiation (define-by-run).
 *
 * When grad mode is on and an op's input requires grad, the op records a node:
 * one edge per input (to the input's producer node, or to the input itself when
 * it is a leaf that requires grad), the tensors its backward needs, and its
 * scalar arguments. em_backward walks the nodes in reverse topological order
 * and calls each op's backward, which is written with ordinary (recording) ops,
 * so with create_graph the gradient is itself differentiable (gradient
 * penalties). Every op is declared once in em_ops.def. */
#ifndef EM_AUTOGRAD_H
#define EM_AUTOGRAD_H

#include "em_tensor.h"

struct em_node;
/* Computes grad_in[i] (or leaves it NULL = zero) for each input i that needs a
 * gradient, from the gradient of the op's output. Returns EM_OK / EM_ERR. */
typedef int (*em_backward_fn)(struct em_node *node, em_tensor *grad_out,
                              em_tensor **grad_in);

typedef struct em_opdef {
    const char *name;
    em_backward_fn backward;
} em_opdef;

/* The op table: EM_OP_<name> indexes em_opdefs. */
typedef enum {
#define EM_OP(name) EM_OP_##name,
#include "em_ops.def"
#undef EM_OP
    EM_OP_COUNT
} em_op_id;
extern const em_opdef em_opdefs[EM_OP_COUNT];

#define EM_NODE_MAX_SAVED 4
#define EM_NODE_MAX_ARGS 24

typedef struct em_edge {
    struct em_node *node; /* producer of the input (retained), or NULL */
    em_tensor *leaf;      /* the input itself if it is a leaf that needs grad */
    int ndim;             /* the input's shape, for gradients of views */
    int64_t shape[EM_MAX_DIMS];
} em_edge;

typedef struct em_node {
    int refcount;
    const em_opdef *op;
    int n_edges;
    em_edge *edges;
    int n_saved;
    em_tensor *saved[EM_NODE_MAX_SAVED];
    uint32_t saved_version[EM_NODE_MAX_SAVED];
    int64_t iarg[EM_NODE_MAX_ARGS]; /* the op's integer arguments */
    float farg[4];                  /* the op's float arguments */
    bool freed;                     /* saved tensors dropped by a backward */
    /* backward bookkeeping */
    em_tensor *grad_accum;
    int dependencies;
    uint64_t visit_mark;
} em_node;

/* Grad mode (thread-local; on by default). */
bool em_grad_enabled(void);
void em_set_grad_enabled(bool on); 

/* Records `op` as the producer of `out` if grad mode is on and any input needs
 * grad; returns the node (to save tensors/args on) or NULL when nothing was
 * recorded. Inputs may contain NULL (non-differentiable slots). On allocation
 * failure sets *failed. */
em_node *em_record(em_op_id op, em_tensor *out, int n, em_tensor *const *inputs);
/* The same for an op defined outside core/ (its name and backward in a static
 * em_opdef of the caller's, which must outlive every node): bindings/ record
 * ember.dist's differentiable all-reduce this way, so core/ needs no MPI. */
em_node *em_record_external(const em_opdef *op, em_tensor *out, int n, em_tensor *const *inputs);
/* Saves a tensor the backward needs (retained; version checked at backward). */
void em_node_save(em_node *node, em_tensor *t);
/* Whether input i of the node needs a gradient. */
static inline bool em_edge_needs_grad(const em_node *n, int i) {
    return n->edges[i].node != NULL || n->edges[i].leaf != NULL;
}

void em_node_release(em_node *node);

/* Gradient-ready hooks (for bindings/: ember.dist starts each bucket's all-reduce while
 * the walk goes on, as PyTorch's DDP does). During em_backward (not em_grad) `ready` is
 * called once per leaf when its .grad is final for this walk (every edge into it has
 * been processed), and `done` once when the walk ends (rc: its status). NULL clears. */
typedef void (*em_grad_ready_fn)(em_tensor *leaf, void *ctx);
typedef void (*em_backward_done_fn)(int rc, void *ctx);
void em_set_grad_hooks(em_grad_ready_fn ready, em_backward_done_fn done, void *ctx);

/* A readable name for the op that made a node: "mul", "sum", "conv2d". */
const char *em_node_name(const em_node *node);

/* Marks a leaf as requiring grad (error on a non-leaf). */
int em_set_requires_grad(em_tensor *t, bool on);

/* Backpropagates from `root`. grad == NULL means ones for a 1-element root
 * (error otherwise). Leaves accumulate into ->grad. Without retain_graph the
 * saved tensors are freed, and a second backward through them is an error.
 * With create_graph the gradients are recorded (differentiable). */
int em_backward(em_tensor *root, em_tensor *grad, bool retain_graph, bool create_graph);

/* Gradients of `root` with respect to `inputs` (returned in grads[], new
 * references, NULL where unreachable), without touching any ->grad; the
 * torch.autograd.grad of gradient penalties. */
int em_grad(em_tensor *root, em_tensor *grad, int n, em_tensor *const *inputs,
            em_tensor **grads, bool retain_graph, bool create_graph);

/* Test hook: makes the backward of the op named `name` return twice its true
 * gradient (NULL restores). Exists only so tests can prove that the gradient
 * check catches a wrong backward. Returns EM_ERR for an unknown op name. */
int em_autograd_debug_break(const char *name);

#endif
