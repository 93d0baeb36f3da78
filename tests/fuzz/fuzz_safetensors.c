/* fuzz_safetensors.c — libFuzzer harness for the checkpoint loader.
 *
 * Feeds arbitrary bytes to em_safetensors_load_buffer (the same parser the
 * file loader uses). It must never crash, leak or allocate beyond the input's
 * size; a file it accepts must survive a round trip: encoding the loaded
 * checkpoint and loading that again has to succeed with the same leaves.
 * Built and run by scripts/fuzz.sh (clang -fsanitize=fuzzer,address,undefined). */
#include <stdint.h>
#include <stdlib.h>

#include "em_safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    em_checkpoint *ck = em_safetensors_load_buffer(data, size, "fuzz-input");
    if (!ck) return 0;
    uint8_t *again = NULL;
    size_t again_size = 0;
    if (em_safetensors_encode(ck, &again, &again_size) == EM_OK) {
        em_checkpoint *back = em_safetensors_load_buffer(again, again_size, "fuzz-reencoded");
        if (!back || back->n_leaves != ck->n_leaves) __builtin_trap(); /* we wrote what we can't read */
        em_checkpoint_free(back);
        free(again);
    }
    em_checkpoint_free(ck);
    return 0;
}
