/* args.h: the argument structs of the decode-path kernels (gemv.cu, decode.cu, model.cu's
 * decode_advance), each passed by value as its kernel's one parameter.
 *
 * Declared once, here. The CUDA entry points read these; src/kernel_args.rs is bindgen's
 * translation of this file, which the Rust launchers fill. A field added or retyped on one side
 * only is then a compile error on the other, instead of a launch that reads its arguments at the
 * wrong offsets; Gpu::launcher still checks every launch's parameter sizes against the kernel's
 * (cuFuncGetParamInfo) as a second line.
 *
 * src/kernel_args.rs is committed, not generated at build time, so building the crate needs no
 * libclang; tests/kernel_args.rs runs bindgen on this file again (libclang from
 * scripts/setup-cuda.sh) and fails if the committed file differs.
 *
 * Plain C for clang and nvcc alike. Device pointers are `void *` where the kernel's element type
 * is a template parameter (the entry casts to its T) and typed otherwise; counts are int, strides
 * long long. A null pointer is allowed only where the field says so. */
#ifndef QK_ARGS_H
#define QK_ARGS_H

/* gemv_<dtype>_<out>_<path>: y = x W^T + b for `rows` (1..=16) rows. */
typedef struct QkGemvArgs {
    const void *x; /* [rows, k], T */
    const void *w; /* [n, k], T */
    const void *b; /* [n], T, or null: no bias */
    void *y;       /* [rows, n], the output dtype */
    int rows;
    int k;
    int n;
} QkGemvArgs;

/* The paged KV cache's geometry for a write at a device slot (rope.cuh's cache_write). */
typedef struct QkCacheGeometry {
    int pos_limit;         /* positions are valid in 0..pos_limit */
    int n_slots;           /* num_pages * page_size */
    int page_size;
    long long page_stride; /* elements */
    long long head_stride;
    long long row_stride;
} QkCacheGeometry;

/* dec_qkv_<dtype>_<path>: rmsnorm prologue, [q|k|v] = xn Wqkv^T + b, RoPE, q out, k and v to the
 * cache at each row's slot. */
typedef struct QkDecQkvArgs {
    const void *x;      /* [rows, hidden], T: the residual stream */
    const void *w_norm; /* [hidden], T */
    float eps;
    const void *w;      /* [(heads + 2 kv_heads) 2 half, hidden], T */
    const void *b;      /* [(heads + 2 kv_heads) 2 half], T */
    int rows;
    int hidden;
    int heads;
    int kv_heads;
    int half;           /* head_dim / 2 */
    const int *positions;    /* [rows] */
    const int *slot_mapping; /* [rows] */
    const float *inv_freq;   /* [half] */
    unsigned *status;        /* RoPE's status word */
    void *q_out;             /* [rows, heads, 2 half], T */
    void *k_cache;           /* T */
    void *v_cache;           /* T */
    QkCacheGeometry cache;
} QkDecQkvArgs;

/* dec_residual_<dtype>_<path>: resid = T(resid + T(x W^T)). */
typedef struct QkDecResidualArgs {
    const void *x; /* [rows, k], T */
    const void *w; /* [n, k], T */
    void *resid;   /* [rows, n], T */
    int rows;
    int k;
    int n;
} QkDecResidualArgs;

/* dec_gate_up_<dtype>_<path>: rmsnorm prologue, act = silu(T(xn Wg^T)) * T(xn Wu^T). */
typedef struct QkDecGateUpArgs {
    const void *x;      /* [rows, hidden], T */
    const void *w_norm; /* [hidden], T */
    float eps;
    const void *w;      /* [2 inter, hidden], T: gate rows, then up rows */
    void *act;          /* [rows, inter], T */
    int rows;
    int hidden;
    int inter;
} QkDecGateUpArgs;

/* dec_head_<dtype>_<path>: the final norm, f32 logits and each block's argmax candidates. */
typedef struct QkDecHeadArgs {
    const void *x;      /* [rows, hidden], T */
    const void *w_norm; /* [hidden], T */
    float eps;
    const void *w;      /* [n, hidden], T: the lm_head */
    float *logits;      /* [rows, n] */
    int rows;
    int hidden;
    int n;
    int n_valid;        /* the argmax's bound: the real vocabulary */
    float *part_v;      /* [rows, blocks] */
    int *part_i;        /* [rows, blocks] */
} QkDecHeadArgs;

/* The decode batch's position update (model.cuh's decode_advance_row); all null when off. */
typedef struct QkAdvance {
    int *positions;          /* [rows] */
    int *lens;               /* [rows] */
    int *slot_mapping;       /* [rows] */
    const int *block_tables; /* [rows, max_pages] */
    int max_pages;
    int page_size;
} QkAdvance;

/* The step's report (model.cuh's step_report_row); all null: no report. */
typedef struct QkReport {
    unsigned *out;                  /* [REPORT_HEAD + rows] */
    unsigned *embed_status;         /* moved into out[0], cleared */
    unsigned *rope_status;          /* moved into out[1], cleared */
    const unsigned *decode_status;  /* read into out[2] */
} QkReport;

/* dec_finish: the argmax over the blocks' candidates into index, then the advance and the report
 * of each row when given. grid (rows, 1, 1). */
typedef struct QkDecFinishArgs {
    const float *part_v; /* [rows, parts] */
    const int *part_i;   /* [rows, parts] */
    int parts;
    int *index;          /* [rows] */
    int advance;         /* 0: `adv` is all null */
    QkAdvance adv;
    QkReport report;
} QkDecFinishArgs;

/* decode_advance: the advance and the report of rows 0..batch, from index (the step's tokens,
 * read only with a report). grid (1, 1, 1). */
typedef struct QkDecodeAdvanceArgs {
    int batch;
    int advance;         /* 0: `adv` is all null */
    QkAdvance adv;
    const int *index;    /* [batch], or null without a report */
    QkReport report;
} QkDecodeAdvanceArgs;

#endif /* QK_ARGS_H */
