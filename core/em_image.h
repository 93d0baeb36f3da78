/* em_image.h — pictures: tiling a batch of images into one grid (like
 * torchvision's make_grid), nearest-neighbour upscaling, and PNG files via
 * Debian's libstb (stb_image_write / stb_image). Images are float tensors
 * [C x H x W] (or [H x W], one channel), channels first. */
#ifndef EM_IMAGE_H
#define EM_IMAGE_H

#include "em_tensor.h"

/* Tiles images [N x C x H x W] into one [C x rows*(H+padding)+padding x
 * cols*(W+padding)+padding] picture, `nrow` images per row (cols =
 * min(nrow, N), rows = ceil(N / cols)); the gaps hold pad_value. */
em_tensor *em_image_grid(em_tensor *images, int nrow, int padding, float pad_value);

/* Nearest-neighbour upscaling of the last two dims ([.. x H x W] ->
 * [.. x H*factor x W*factor]); factor in 1..64. */
em_tensor *em_image_upscale(em_tensor *img, int factor);

/* Writes img [C x H x W] (C = 1, 3 or 4) or [H x W] as an 8-bit PNG, mapping
 * lo -> 0 and hi -> 255 (values outside are clamped). A NaN pixel, a bad shape
 * or an unwritable path is an error. */
int em_image_save_png(const char *path, em_tensor *img, float lo, float hi);

/* Reads an image file (PNG, JPEG, BMP, ... as stb_image knows them) into
 * [C x H x W] with values in [0, 1]: C = 1 for grey (+alpha), 3 for colour
 * (+alpha); alpha is dropped. */
em_tensor *em_image_load(const char *path);

#endif
