/* checkpoints/inspect_cmd.h — `anyref inspect FILE`: every tensor of a
 * checkpoint, one line each, sorted by name (byte order):
 *
 *     <name>\t<dtype>\t[<d0>, <d1>, ...]\t<sum>
 *
 * dtype is the safetensors name (F32, F16, BF16, I64, ...); the shape of a
 * scalar is []; sum is the sum of the values in double precision (each value
 * converted exactly, added in C order), printed with %.17g ("-" for dtypes
 * with no sum here: F8/F6/F4 and complex).
 *
 * FILE may be:
 *   a .safetensors file or a PyTorch checkpoint (.pth / .bin, torch.save zip):
 *       read through checkpoints/safetensors.h's st_open (torch_ckpt.h);
 *   a sharded index (*.json with a weight_map, e.g. model.safetensors.index.json
 *       or pytorch_model.bin.index.json): the tensors its weight_map lists,
 *       read from their shards;
 *   a directory holding one of model.safetensors.index.json, model.safetensors,
 *       pytorch_model.bin.index.json, pytorch_model.bin (tried in that order);
 *   an HDF5 file (our checkpoints, checkpoints/checkpoint.h): every numeric
 *       dataset under its path without the leading '/', e.g.
 *       "weights/model.norm.weight", "adam_m/...".
 * Errors (unreadable, unknown or corrupt file): -1 + ar_error naming it.
 * Depends on checkpoints/safetensors.h, core/json.h, HDF5.
 */
#ifndef ANYREF_CHECKPOINTS_INSPECT_CMD_H
#define ANYREF_CHECKPOINTS_INSPECT_CMD_H

#include <stdio.h>

/* Writes the listing of path to out. 0, or -1 + ar_error. */
int ckpt_inspect(const char *path, FILE *out);
/* `anyref inspect FILE...` (argv[0] = "inspect"): 0, or 1 after printing the error. */
int ckpt_inspect_main(int argc, char **argv);

#endif
