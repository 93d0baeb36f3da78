/* em_lstm.h — the LSTM cell of the core (PyTorch's LSTMCell semantics, gate
 * order i, f, g, o).
 *
 * The matrix products stay ordinary ops (em_linear); what is fused is the
 * pointwise part, one autograd node for the five activations and the two
 * state updates. An autograd node has one output, so the new hidden and cell
 * states come back stacked as [2 x N x H]: em_select(out, 0, 0) is h and
 * em_select(out, 0, 1) is c, both contiguous [N x H] views (differentiable,
 * like every view), so the next step's matmul reads h and the next cell reads
 * c without a copy.
 *
 * Like the rest of the core: inputs are borrowed, a returned tensor is one new
 * reference, NULL means failure with a message naming the function and the
 * shapes. */
#ifndef EM_LSTM_H
#define EM_LSTM_H

#include "em_tensor.h"

/* The fused pointwise cell: gates [N x 4H] (pre-activations, blocks i, f, g, o
 * of H columns each) and c_prev [N x H] ->
 *   i = sigmoid(gates_i), f = sigmoid(gates_f), g = tanh(gates_g), o = sigmoid(gates_o)
 *   c = f c_prev + i g,  h = o tanh(c)
 * returned as [2 x N x H] (h, then c). Inputs whose rows have unit stride are
 * read in place (a select of an earlier result is); others are copied once.
 * The backward is a fused kernel when the gradient is not being recorded,
 * and the same products built of ordinary ops when it is (create_graph), so
 * gradients of gradients work. */
em_tensor *em_lstm_pointwise(em_tensor *gates, em_tensor *c_prev);

/* One LSTM step: gates = x w_ih^T + b_ih + h w_hh^T + b_hh, then
 * em_lstm_pointwise(gates, c). x [N x I], h and c [N x H], w_ih [4H x I],
 * w_hh [4H x H], b_ih and b_hh [4H] or NULL. Returns [2 x N x H] (h', c'). */
em_tensor *em_lstm_cell(em_tensor *x, em_tensor *h, em_tensor *c, em_tensor *w_ih,
                        em_tensor *w_hh, em_tensor *b_ih, em_tensor *b_hh);

#endif
