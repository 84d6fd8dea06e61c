/* train/main.c — the `anyref` command line. The only place that decides to stop
 * the process: library code returns errors (core/error.h) and this prints them. */
#include "core/config.h"
#include "core/dist.h"
#include "core/error.h"
#include "core/log.h"
#include "kernels/kernels.h"
#include "train/train.h"
#include "train/plan.h"
#include "data/tokenize_cmd.h"
#include "data/prepare_cmd.h"
#include "data/planted.h"
#include "data/shapes.h"
#include "train/inspect_cmd.h"
#include "train/export_cmd.h"
#include "checkpoints/inspect_cmd.h"
#include "eval/infer.h"
#include "eval/evaluate.h"
#include "eval/report.h"
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define ANYREF_VERSION "0.1.0"

static void usage(FILE *f) {
    fprintf(f,
        "usage: anyref <command> [args]\n"
        "\n"
        "commands:\n"
        "  train <config.cfg> [section.key=value ...]   train as the config says (overrides after it)\n"
        "  train <run_dir> [section.key=value ...]      resume that run: its config.cfg, train.resume = auto (the newest\n"
        "                                               checkpoint that verifies); SIGINT/SIGTERM save and print this command\n"
        "  config <config.cfg> [section.key=value ...]  print the fully resolved config\n"
        "  plan <config.cfg> [section.key=value ...]    the run's memory plan (weights, gradients + AdamW, activations,\n"
        "                                               workspace, total) without allocating the model or reading data\n"
        "  export-peft <config.cfg> <dir> [k=v ...]     the run's newest checkpoint as a PEFT adapter\n"
        "                                               (adapter_model.safetensors + adapter_config.json)\n"
        "  merge <config.cfg> <out.safetensors> [k=v ...]  model.init + the run's LoRA merged into full weights\n"
        "  export RUN_DIR|CKPT --out DIR [--merged] [--shard-mb N] [k=v ...]\n"
        "                                               PEFT adapter + trained non-LoRA modules (and --merged: the\n"
        "                                               full merged model) with the official AnyRef names\n"
        "  tokenize --tokenizer FILE [--add-bos] [--add-eos] [--special TEXT]... [--decode] TEXT...\n"
        "                                               ids of each text on one line (--decode: ids -> text);\n"
        "                                               FILE is a SentencePiece tokenizer.model or an HF tokenizer.json\n"
        "  prepare --tokenizer FILE [--template llava_v1|vicuna_v1_1] [--seq-len T] [--add-special TEXT]...\n"
        "          [--no-strip] IN.json OUT.h5         LLaVA-format conversations -> the HDF5 token format\n"
        "  cache <config.cfg> [section.key=value ...]   the frozen CLIP / ImageBind outputs of the config's data\n"
        "                                               into the feature cache data.cache (training reads them)\n"
        "  data planted --out DIR [--seed N] [--dim C] [--grid G] [--objects K] [--train N] [--val N]\n"
        "                                               a synthetic referring-segmentation set (SAM image embeddings\n"
        "                                               + masks, data/planted.h) as DIR/train.h5 and DIR/val.h5\n"
        "  data shapes --out DIR [--seed N] [--size tiny|small|medium] [--images N] [--videos N]\n"
        "                                               the synthetic shapes world in the real formats (COCO, REFER\n"
        "                                               pickle, AVSBench S4, JSON lines, tokenizer.json; data/shapes.h)\n"
        "  data inspect <config.cfg> [section.key=value ...] [--limit N]\n"
        "                                               one JSON line per sample of the config's source.* data set\n"
        "                                               (question, answer, reference, box, mask areas, tokens)\n"
        "  infer --checkpoint CKPT|RUN_DIR --image FILE (--text T | --box x0,y0,x1,y1 | --ref-image FILE | --audio FILE)\n"
        "        [--question Q] [--caption] [--out PREFIX] [--max-new N] [k=v ...]\n"
        "                                               the generated answer; the mask as PREFIX_mask.png + _overlay.png\n"
        "  eval <config.cfg> [k=v ...] [--checkpoint CKPT] [--splits a,b] [--samples N] [--max-new N] [--json FILE]\n"
        "                                               gIoU / cIoU per set, split and reference type beside the\n"
        "                                               empty / whole-image baselines; caption exact match\n"
        "  inspect FILE...                              every tensor of a .safetensors / PyTorch .pth/.bin checkpoint,\n"
        "                                               sharded index, model directory or HDF5 checkpoint, sorted:\n"
        "                                               name, dtype, shape, sum (float64)\n"
        "  plot RUN_DIR [--out FILE]                    the loss curves of RUN_DIR/metrics.jsonl as a PNG\n"
        "                                               (default RUN_DIR/loss.png)\n"
        "  keys                                         list every config key with its type, default and help\n"
        "  version                                      print the version and the compute backend\n"
        "\n"
        "Configs are INI-like: [section] headers, key = value lines, # or ; comments.\n"
        "See configs/demo.cfg and README.md.\n");
}

static ar_config *load(int argc, char **argv) {
    ar_config *c = cfg_new(train_schema, train_schema_len);
    if (!c) return NULL;
    struct stat sb;
    if (stat(argv[0], &sb) == 0 && S_ISDIR(sb.st_mode)) {   /* a run directory: its config, resumed */
        char path[4200], kv[4300];
        snprintf(path, sizeof path, "%s/config.cfg", argv[0]);
        snprintf(kv, sizeof kv, "run.dir=%s", argv[0]);
        if (cfg_load_file(c, path) || cfg_override(c, kv) || cfg_override(c, "train.resume=auto")) {
            ar_error_prefix("run directory %s: ", argv[0]);
            cfg_free(c);
            return NULL;
        }
    } else if (cfg_load_file(c, argv[0])) { cfg_free(c); return NULL; }
    for (int i = 1; i < argc; i++) {
        if (cfg_override(c, argv[i])) {
            ar_error_prefix("command line argument %d: ", i + 2);
            cfg_free(c);
            return NULL;
        }
    }
    return c;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    train_program = argv[0];
    if (!strcmp(cmd, "version")) {
        printf("anyref %s (backend %s, %d threads)\n", ANYREF_VERSION, k_backend_name(), k_num_threads());
        return 0;
    }
    if (!strcmp(cmd, "tokenize")) return tokenize_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "infer")) return infer_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval")) {
        /* sharded over the ranks under mpirun / srun (make MPI=1); a rank
         * that fails ends every rank with its message */
        if (dist_init(&argc, &argv)) { log_error("%s", ar_error()); return 1; }
        int rc = eval_main(argc - 1, argv + 1);
        if (rc) dist_abort(ar_error()[0] ? ar_error() : "anyref eval: bad command line");
        dist_finalize();
        return rc;
    }
    if (!strcmp(cmd, "export")) return export_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "prepare")) return prepare_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "data")) {
        if (argc >= 3 && !strcmp(argv[2], "planted")) return planted_main(argc - 2, argv + 2);
        if (argc >= 3 && !strcmp(argv[2], "shapes")) return shapes_main(argc - 2, argv + 2);
        if (argc >= 3 && !strcmp(argv[2], "inspect")) return inspect_main(argc - 2, argv + 2);
        fprintf(stderr, "anyref data: expected planted, shapes or inspect\n");
        return 2;
    }
    if (!strcmp(cmd, "inspect")) return ckpt_inspect_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "plot")) return report_plot_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "keys")) { cfg_print_help(train_schema, train_schema_len, stdout); return 0; }
    if (!strcmp(cmd, "train") || !strcmp(cmd, "config") || !strcmp(cmd, "cache") || !strcmp(cmd, "plan")) {
        if (argc < 3) { fprintf(stderr, "anyref %s: missing config file\n", cmd); usage(stderr); return 2; }
        ar_config *c = load(argc - 2, argv + 2);
        if (!c) { log_error("%s", ar_error()); return 2; }
        int rc = 0;
        if (!strcmp(cmd, "config")) cfg_write(c, stdout);
        else if (!strcmp(cmd, "plan")) { if (plan_main_cfg(c, stdout)) { log_error("%s", ar_error()); rc = 1; } }
        else if (!strcmp(cmd, "cache")) { if (train_cache(c)) { log_error("%s", ar_error()); rc = 1; } }
        else {
            /* data parallel (make MPI=1 under mpirun / srun): a rank that fails
             * ends every rank with its message instead of leaving them waiting */
            if (dist_init(&argc, &argv)) { log_error("%s", ar_error()); cfg_free(c); return 1; }
            if (train_run(c)) { log_error("%s", ar_error()); rc = 1; dist_abort(ar_error()); }
            dist_finalize();
        }
        cfg_free(c);
        return rc;
    }
    if (!strcmp(cmd, "export-peft") || !strcmp(cmd, "merge")) {
        if (argc < 4) { fprintf(stderr, "anyref %s: expected <config.cfg> <output>\n", cmd); usage(stderr); return 2; }
        const char *out = argv[3];
        argv[3] = argv[2];   /* load() takes the config path then overrides */
        ar_config *c = load(argc - 3, argv + 3);
        if (!c) { log_error("%s", ar_error()); return 2; }
        int rc = !strcmp(cmd, "merge") ? train_merge(c, out) : train_export_peft(c, out);
        if (rc) log_error("%s", ar_error());
        cfg_free(c);
        return rc ? 1 : 0;
    }
    fprintf(stderr, "anyref: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
