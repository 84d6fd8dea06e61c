/* eval/infer.h — `anyref infer` (see infer.c): one image + one reference
 * through a trained checkpoint; the generated answer, the mask as PNG. */
#ifndef ANYREF_TRAIN_INFER_H
#define ANYREF_TRAIN_INFER_H
int infer_main(int argc, char **argv);
#endif
