import { GgmlType, GgufArray, GgufType } from './gguf.format';
import { readGgufMetadata } from './gguf.reader';
import { TensorSpec, TypedValue, writeGguf } from './gguf.writer';
import { rng } from './model.synth';

/**
 * How the synthetic reranker's weights are made.
 * - `overlap`: constructed weights (below) whose score rises with the share of the document's
 *   tokens that also occur in the query: a deterministic, query-dependent relevance signal that
 *   llama.cpp's own reranking graph computes. Not a semantic model: synonyms score nothing.
 * - `random`: random weights; the scores are valid probabilities, their order means nothing.
 */
export type RerankerSynthMode = 'overlap' | 'random';

/** Residual width, heads (head width 64), layers. */
const DIM = 128;
const HEADS = 2;
const HEAD = DIM / HEADS;
const LAYERS = 3;
const FFN = 32;
/** The residual stream's named dimensions after the 64 token-identity ones. */
const F_ONE = 64; // constant ONE in every token's embedding
const F_EOS = 65; // 1 for the end-of-sequence token
const F_SEG = 66; // written by layer 0: 1 after the first EOS (the document), 0 in the query
const F_MATCH = 67; // written by layer 1: share of this token's earlier occurrences that are in the query
const F_AGG = 68; // written by layer 2 at the last token: mean of F_MATCH over the document
const ONE = 4;
/** q_norm × k_norm weights: a matching key scores 8·ab = 40, a random other token about ±8·ab·0.125. */
const QK = Math.sqrt(5);
/** RMSNorm of a residual vector dominated by ONE: |x|² ≈ 1 (identity) + ONE² + features. */
const rms = (extra: number): number => Math.sqrt((1 + ONE * ONE + extra) / DIM);

/** A standard normal value from two uniform ones (Box–Muller) of the model synthesizer's generator. */
function gaussian(next: () => number): number {
  const u = (): number => next() / 0x100000000;
  return Math.sqrt(-2 * Math.log(u() || 1e-12)) * Math.cos(2 * Math.PI * u());
}

/** A float32 tensor; `ne` in ggml order (the contiguous dimension first), `at(i0, i1)` its values. */
function f32(name: string, ne: number[], at: (i0: number, i1: number) => number): TensorSpec {
  const [n0, n1 = 1] = ne;
  const data = new Float32Array(n0 * n1);
  for (let i1 = 0; i1 < n1; i1++) for (let i0 = 0; i0 < n0; i0++) data[i1 * n0 + i0] = at(i0, i1);
  return { name, dims: ne, type: GgmlType.F32, fill: (write) => write(Buffer.from(data.buffer)) };
}

/**
 * Writes a tiny reranking GGUF: Qwen3 architecture (llama.cpp pools the LAST token for ranking
 * and applies a softmax over the classifier outputs, whose first is the score), a classifier
 * head `cls.output.weight` with labels ["yes", "no"], `qwen3.pooling_type` = 4 (RANK), and the
 * bundled model's tokenizer (its BOS and EOS frame the query and document as node-llama-cpp's
 * ranking context writes them: BOS query EOS document EOS).
 *
 * The `overlap` weights, layer by layer (one working head per layer, no feed-forward; rotary
 * positions made negligible with a linear RoPE scaling factor of 10⁶, so attention depends on
 * content only; each token embedding is a random unit vector in 64 identity dimensions plus
 * ONE = 4 in a constant dimension and 1 in F_EOS for the EOS token):
 * 0. segment: every token attends to the EOS positions before it (key = F_EOS, score 40): after
 *    the first EOS the attention lands on an EOS and writes 1 into F_SEG; query tokens, with no
 *    EOS before them, get exactly 0.
 * 1. match: query = key = the token's identity vector, so a token attends to its own earlier
 *    occurrences (score 40, other tokens about ±8); the value is 1 − F_SEG, so F_MATCH is the
 *    share of them that lie in the query: 1/2 for a document token that occurs once in the query
 *    and once so far in the document, 0 for one the query lacks.
 * 2. aggregate: the last token attends uniformly to the document positions (key = F_SEG) and
 *    averages F_MATCH into F_AGG.
 * The classifier reads F_AGG against a threshold on ONE: score = σ(10·(agg − 0.1)).
 */
export function synthesizeReranker(out: string, tokenizerFrom: string, mode: RerankerSynthMode = 'overlap', seed = 1): number {
  const source = readGgufMetadata(tokenizerFrom);
  const tokens = source.get('tokenizer.ggml.tokens') as GgufArray;
  const vocab = tokens.items.length;
  const eos = 2;
  const u32 = (value: number): TypedValue => ({ type: GgufType.UINT32, value });
  const f32v = (value: number): TypedValue => ({ type: GgufType.FLOAT32, value });
  const metadata = new Map<string, TypedValue>([
    ['general.architecture', { type: GgufType.STRING, value: 'qwen3' }],
    ['general.name', { type: GgufType.STRING, value: `synthetic-reranker-${mode}-seed${seed}` }],
    ['general.file_type', u32(0)],
    ['qwen3.context_length', u32(2048)],
    ['qwen3.embedding_length', u32(DIM)],
    ['qwen3.block_count', u32(LAYERS)],
    ['qwen3.feed_forward_length', u32(FFN)],
    ['qwen3.attention.head_count', u32(HEADS)],
    ['qwen3.attention.head_count_kv', u32(HEADS)],
    ['qwen3.rope.dimension_count', u32(HEAD)],
    ['qwen3.rope.freq_base', f32v(10000)],
    ['qwen3.rope.scaling.type', { type: GgufType.STRING, value: 'linear' }],
    ['qwen3.rope.scaling.factor', f32v(mode === 'overlap' ? 1e6 : 1)],
    ['qwen3.attention.layer_norm_rms_epsilon', f32v(1e-6)],
    // 4 = LLAMA_POOLING_TYPE_RANK; two labels: the score is the softmax's first.
    ['qwen3.pooling_type', u32(4)],
    ['qwen3.classifier.output_labels', { type: GgufType.ARRAY, value: { itemType: GgufType.STRING, items: ['yes', 'no'] } }],
    ['tokenizer.ggml.model', { type: GgufType.STRING, value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: GgufType.ARRAY, value: tokens }],
    ['tokenizer.ggml.scores', { type: GgufType.ARRAY, value: source.get('tokenizer.ggml.scores') as GgufArray }],
    ['tokenizer.ggml.token_type', { type: GgufType.ARRAY, value: source.get('tokenizer.ggml.token_type') as GgufArray }],
    ['tokenizer.ggml.unknown_token_id', u32(0)],
    ['tokenizer.ggml.bos_token_id', u32(1)],
    ['tokenizer.ggml.eos_token_id', u32(eos)],
    ['tokenizer.ggml.add_bos_token', { type: GgufType.BOOL, value: true }],
  ]);
  const tensors = mode === 'overlap' ? overlapTensors(vocab, eos, seed) : randomTensors(vocab, seed);
  return writeGguf(out, metadata, tensors);
}

function overlapTensors(vocab: number, eos: number, seed: number): TensorSpec[] {
  // Unit identity vectors: random directions in 64 dimensions (cosine of two about ±0.125).
  const identity: Float32Array[] = [];
  const next = rng(seed, 'identity');
  for (let t = 0; t < vocab; t++) {
    const v = Float32Array.from({ length: HEAD }, () => gaussian(next));
    const norm = Math.hypot(...v);
    identity.push(v.map((x) => x / norm));
  }
  const embedding = f32('token_embd.weight', [DIM, vocab], (d, t) => (d < HEAD ? identity[t][d] : d === F_ONE ? ONE : d === F_EOS && t === eos ? 1 : 0));
  const ones = (name: string, n: number, value = 1): TensorSpec => f32(name, [n], () => value);
  const zero = (name: string, ne: number[]): TensorSpec => f32(name, ne, () => 0);
  /** A projection into head 0 (rows 0..63 of the output): `rows(o, i)` for o < 64, zero elsewhere. */
  const head0 = (name: string, rows: (o: number, i: number) => number): TensorSpec => f32(name, [DIM, DIM], (i, o) => (o < HEAD ? rows(o, i) : 0));
  /** The output projection writing head 0's first value dimension into residual dimension `to`, times `scale`. */
  const write = (name: string, to: number, scale: number): TensorSpec => f32(name, [DIM, DIM], (i, o) => (o === to && i === 0 ? scale : 0));
  const layer = (l: number, q: (o: number, i: number) => number, k: (o: number, i: number) => number, v: (o: number, i: number) => number, to: number, scale: number): TensorSpec[] => [
    ones(`blk.${l}.attn_norm.weight`, DIM),
    head0(`blk.${l}.attn_q.weight`, q),
    head0(`blk.${l}.attn_k.weight`, k),
    head0(`blk.${l}.attn_v.weight`, v),
    write(`blk.${l}.attn_output.weight`, to, scale),
    ones(`blk.${l}.attn_q_norm.weight`, HEAD, QK),
    ones(`blk.${l}.attn_k_norm.weight`, HEAD, QK),
    ones(`blk.${l}.ffn_norm.weight`, DIM),
    zero(`blk.${l}.ffn_gate.weight`, [DIM, FFN]),
    zero(`blk.${l}.ffn_up.weight`, [DIM, FFN]),
    zero(`blk.${l}.ffn_down.weight`, [FFN, DIM]),
  ];
  const pick = (from: number) => (o: number, i: number) => (o === 0 && i === from ? 1 : 0);
  const copyIdentity = (o: number, i: number): number => (o === i ? 1 : 0);
  const tensors: TensorSpec[] = [
    embedding,
    ones('output_norm.weight', DIM),
    // Layer 0: F_SEG = attention on EOS positions (the value is F_EOS, which normalises to 1/rms of an EOS token's vector).
    ...layer(0, pick(F_ONE), pick(F_EOS), pick(F_EOS), F_SEG, rms(1)),
    // Layer 1: F_MATCH = share of same-token positions in the query; value (ONE/ONE − SEG)/rms.
    ...layer(1, copyIdentity, copyIdentity, (o, i) => (o === 0 ? (i === F_ONE ? 1 / ONE : i === F_SEG ? -1 : 0) : 0), F_MATCH, rms(0)),
    // Layer 2: F_AGG = mean of F_MATCH over the document (keys: F_SEG > 0).
    ...layer(2, pick(F_ONE), pick(F_SEG), pick(F_MATCH), F_AGG, rms(1)),
  ];
  // Classifier: yes = 10·(agg − 0.1) on the normalised last-token vector (an EOS: F_EOS and F_SEG are 1), no = 0.
  const last = rms(2);
  tensors.push(f32('cls.output.weight', [DIM, 2], (i, o) => (o !== 0 ? 0 : i === F_AGG ? 10 * last : i === F_ONE ? (-10 * 0.1 * last) / ONE : 0)));
  return tensors;
}

function randomTensors(vocab: number, seed: number): TensorSpec[] {
  const rand = (name: string, ne: number[], std = 0.02): TensorSpec => {
    const next = rng(seed, name);
    return f32(name, ne, () => gaussian(next) * std);
  };
  const ones = (name: string, n: number): TensorSpec => f32(name, [n], () => 1);
  const tensors: TensorSpec[] = [rand('token_embd.weight', [DIM, vocab], 1), ones('output_norm.weight', DIM)];
  for (let l = 0; l < LAYERS; l++) {
    tensors.push(
      ones(`blk.${l}.attn_norm.weight`, DIM),
      rand(`blk.${l}.attn_q.weight`, [DIM, DIM]),
      rand(`blk.${l}.attn_k.weight`, [DIM, DIM]),
      rand(`blk.${l}.attn_v.weight`, [DIM, DIM]),
      rand(`blk.${l}.attn_output.weight`, [DIM, DIM]),
      ones(`blk.${l}.attn_q_norm.weight`, HEAD),
      ones(`blk.${l}.attn_k_norm.weight`, HEAD),
      ones(`blk.${l}.ffn_norm.weight`, DIM),
      rand(`blk.${l}.ffn_gate.weight`, [DIM, FFN]),
      rand(`blk.${l}.ffn_up.weight`, [DIM, FFN]),
      rand(`blk.${l}.ffn_down.weight`, [FFN, DIM]),
    );
  }
  tensors.push(rand('cls.output.weight', [DIM, 2], 1));
  return tensors;
}
