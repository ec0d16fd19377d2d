import { createHash } from 'node:crypto';
import { GgmlType, GgufArray, GgufType, Q8_0_BLOCK } from './gguf.format';
import { readGgufMetadata } from './gguf.reader';
import { TensorSpec, TypedValue, writeGguf } from './gguf.writer';
import { CHAT_TEMPLATES, ChatTemplateFamily, ChatTemplateName } from './chat-templates';

/** Shape of a synthetic Llama model. */
export interface SynthShape {
  /** Embedding width. Default 768. */
  readonly dim: number;
  /** Transformer blocks. Default 12. */
  readonly layers: number;
  /** Attention heads. Default 12. */
  readonly heads: number;
  /** Key/value heads (grouped-query attention). Default 4. */
  readonly kvHeads: number;
  /** Feed-forward width. Default 2048. */
  readonly ffn: number;
  /** Vocabulary size; the bundled model's 512 tokens padded with filler tokens. Default 32,000. */
  readonly vocab: number;
  /** Training context written to the metadata. Default 2048. */
  readonly context: number;
  /** Weight type of the matrices. Default Q8_0. */
  readonly type: GgmlType.Q8_0 | GgmlType.F16 | GgmlType.F32;
}

/** The shapes ENGINE-NOTES measured: a 110M-parameter Q8_0 model and TinyLlama's 1.1B F16 shape. */
export const SYNTH_PRESETS: Record<'110m' | '1.1b', SynthShape> = {
  '110m': { dim: 768, layers: 12, heads: 12, kvHeads: 4, ffn: 2048, vocab: 32_000, context: 2048, type: GgmlType.Q8_0 },
  '1.1b': { dim: 2048, layers: 22, heads: 32, kvHeads: 4, ffn: 5632, vocab: 32_000, context: 2048, type: GgmlType.F16 },
};

/** Standard deviation of the random weights: small enough that activations stay finite. */
const WEIGHT_STD = 0.02;
const CHUNK_ELEMENTS = 1 << 20;

/** xorshift32 seeded from (seed, tensor name): each tensor's bytes depend only on those two. */
export function rng(seed: number, name: string): () => number {
  let s = createHash('sha256').update(`${seed}:${name}`).digest().readUInt32LE(0) || 0x9e3779b9;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

function toHalf(value: number): number {
  const f32 = new Float32Array([value]);
  const x = new Uint32Array(f32.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  let exp = ((x >>> 23) & 0xff) - 127 + 15;
  let mant = x & 0x7fffff;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant = (mant | 0x800000) >> (1 - exp);
    return sign | ((mant + 0x1000) >> 13);
  }
  if (exp >= 31) return sign | 0x7c00;
  const h = sign | (exp << 10) | ((mant + 0x1000) >> 13);
  return h;
}

/** 4,096 f16 values evenly spread over ±WEIGHT_STD·√3 (a uniform with the wanted std). */
const HALF_LEVELS = (() => {
  const limit = WEIGHT_STD * Math.sqrt(3);
  const out = new Uint16Array(4096);
  for (let i = 0; i < 4096; i++) out[i] = toHalf(((i - 2047.5) / 2047.5) * limit);
  return out;
})();

/**
 * A random matrix of `dims` (ne0 = row length first). Rows listed in `zeroRows` are all zeros;
 * the random stream is drawn for them all the same, so that every other row is what it would be
 * without them.
 */
function matrix(name: string, dims: [number, number], type: SynthShape['type'], seed: number, zeroRows: ReadonlySet<number> = new Set()): TensorSpec {
  const elements = dims[0] * dims[1];
  const zero = (element: number): boolean => zeroRows.size > 0 && zeroRows.has(Math.floor(element / dims[0]));
  /** Zeroes the parts of the zero rows that fall in elements [from, from + arr.length). */
  const clear = (arr: Uint16Array | Float32Array, from: number): void => {
    for (const row of zeroRows) {
      const start = Math.max(row * dims[0], from);
      const end = Math.min((row + 1) * dims[0], from + arr.length);
      if (start < end) arr.fill(0, start - from, end - from);
    }
  };
  return {
    name,
    dims,
    type,
    fill(write) {
      const next = rng(seed, name);
      if (type === GgmlType.Q8_0) {
        const scale = toHalf((WEIGHT_STD * Math.sqrt(3)) / 127);
        const blocksPerChunk = CHUNK_ELEMENTS / Q8_0_BLOCK;
        for (let done = 0; done < elements; ) {
          const blocks = Math.min(blocksPerChunk, (elements - done) / Q8_0_BLOCK);
          const buf = Buffer.allocUnsafe(blocks * 34);
          for (let b = 0; b < blocks; b++) {
            const at = b * 34;
            buf.writeUInt16LE(scale, at);
            for (let i = 0; i < 32; i += 4) {
              const r = next();
              buf[at + 2 + i] = (r % 255) - 127 + 256;
              buf[at + 3 + i] = ((r >>> 8) % 255) - 127 + 256;
              buf[at + 4 + i] = ((r >>> 16) % 255) - 127 + 256;
              buf[at + 5 + i] = ((r >>> 24) % 255) - 127 + 256;
            }
            // Q8_0 blocks never straddle rows (row lengths are multiples of 32).
            if (zero(done + b * Q8_0_BLOCK)) buf.fill(0, at, at + 34);
          }
          write(buf);
          done += blocks * Q8_0_BLOCK;
        }
        return;
      }
      for (let done = 0; done < elements; ) {
        const n = Math.min(CHUNK_ELEMENTS, elements - done);
        if (type === GgmlType.F16) {
          const arr = new Uint16Array(n);
          for (let i = 0; i < n; i++) arr[i] = HALF_LEVELS[next() & 4095];
          clear(arr, done);
          write(Buffer.from(arr.buffer));
        } else {
          const arr = new Float32Array(n);
          const limit = WEIGHT_STD * Math.sqrt(3);
          for (let i = 0; i < n; i++) arr[i] = ((next() / 0xffffffff) * 2 - 1) * limit;
          clear(arr, done);
          write(Buffer.from(arr.buffer));
        }
        done += n;
      }
    },
  };
}

function ones(name: string, n: number): TensorSpec {
  return { name, dims: [n], type: GgmlType.F32, fill: (write) => write(Buffer.from(new Float32Array(n).fill(1).buffer)) };
}

function zeros(name: string, n: number): TensorSpec {
  return { name, dims: [n], type: GgmlType.F32, fill: (write) => write(Buffer.alloc(n * 4)) };
}

/** Parameters of a shape (weights only). */
export function synthParameters(s: SynthShape): number {
  const headDim = s.dim / s.heads;
  const kv = s.kvHeads * headDim;
  const perLayer = 2 * s.dim + s.dim * s.dim * 2 + s.dim * kv * 2 + 3 * s.dim * s.ffn;
  return 2 * s.vocab * s.dim + s.dim + s.layers * perLayer;
}

export function validateShape(s: SynthShape): void {
  const fail = (m: string): never => {
    throw new RangeError(`invalid model shape: ${m}`);
  };
  for (const [k, v] of Object.entries(s)) if (k !== 'type' && (!Number.isInteger(v) || v < 1)) fail(`${k} must be a positive integer`);
  if (s.dim % s.heads) fail(`dim ${s.dim} must be divisible by heads ${s.heads}`);
  if (s.heads % s.kvHeads) fail(`heads ${s.heads} must be divisible by kvHeads ${s.kvHeads}`);
  if ((s.dim / s.heads) % 2) fail('head dimension must be even (RoPE)');
  if (s.type === GgmlType.Q8_0 && (s.dim % 32 || s.ffn % 32)) fail('Q8_0 needs dim and ffn divisible by 32');
  if (s.vocab < 512) fail('vocab must be at least 512 (the bundled tokenizer)');
}

/**
 * Writes a random-weight Llama GGUF of the given shape with the bundled model's tokenizer,
 * padded to `vocab` tokens. Same seed, same bytes. The work per token does not depend on the
 * weights' values, so these files measure speed honestly; their text is noise.
 */
export function synthesizeModel(
  out: string,
  shape: SynthShape,
  tokenizerFrom: string,
  seed = 1,
  onProgress?: (done: number, total: number) => void,
  /** A model family's chat template and special tokens to write into the file. */
  chatTemplate?: ChatTemplateName,
): number {
  validateShape(shape);
  const family: ChatTemplateFamily | undefined = chatTemplate ? CHAT_TEMPLATES[chatTemplate] : undefined;
  if (chatTemplate && !family) throw new RangeError(`unknown chat template ${chatTemplate}; use ${Object.keys(CHAT_TEMPLATES).join(', ')}`);
  const source = readGgufMetadata(tokenizerFrom);
  const tokens = source.get('tokenizer.ggml.tokens') as GgufArray;
  const scores = source.get('tokenizer.ggml.scores') as GgufArray;
  const types = source.get('tokenizer.ggml.token_type') as GgufArray;
  const base = tokens.items.length;
  // Special tokens the template writes that the bundled tokenizer lacks: control tokens right
  // after the bundled ones (llama.cpp then matches them as single tokens and, for <|eot_id|>,
  // <|im_end|> and the like, as end-of-generation).
  const specials = (family?.specialTokens ?? []).filter((t) => !(tokens.items as unknown[]).includes(t));
  if (base + specials.length > shape.vocab) throw new RangeError(`vocab must be at least ${base + specials.length} for the ${chatTemplate} template's special tokens`);
  const padded = <T extends string | number>(items: readonly unknown[], special: (i: number) => T, filler: (i: number) => T): T[] => [
    ...(items.slice(0, Math.min(base, shape.vocab)) as T[]),
    ...specials.map((_, i) => special(i)),
    ...Array.from({ length: Math.max(0, shape.vocab - base - specials.length) }, (_, i) => filler(base + specials.length + i)),
  ];
  const tokenId = (text: string): number => {
    const at = (tokens.items as unknown[]).indexOf(text);
    return at >= 0 ? at : base + specials.indexOf(text);
  };
  const u32 = (value: number): TypedValue => ({ type: GgufType.UINT32, value });
  const headDim = shape.dim / shape.heads;
  const fileType = shape.type === GgmlType.Q8_0 ? 7 : shape.type === GgmlType.F16 ? 1 : 0;
  const arch = family?.architecture ?? 'llama';
  const metadata = new Map<string, TypedValue>([
    ['general.architecture', { type: GgufType.STRING, value: arch }],
    ['general.name', { type: GgufType.STRING, value: family?.name ?? `synthetic-llama-${(synthParameters(shape) / 1e6).toFixed(0)}M-seed${seed}` }],
    ['general.file_type', u32(fileType)],
    [`${arch}.context_length`, u32(shape.context)],
    [`${arch}.embedding_length`, u32(shape.dim)],
    [`${arch}.block_count`, u32(shape.layers)],
    [`${arch}.feed_forward_length`, u32(shape.ffn)],
    [`${arch}.attention.head_count`, u32(shape.heads)],
    [`${arch}.attention.head_count_kv`, u32(shape.kvHeads)],
    [`${arch}.rope.dimension_count`, u32(headDim)],
    [`${arch}.rope.freq_base`, { type: GgufType.FLOAT32, value: 10000 }],
    [`${arch}.attention.layer_norm_rms_epsilon`, { type: GgufType.FLOAT32, value: 1e-5 }],
    [`${arch}.vocab_size`, u32(shape.vocab)],
    ['tokenizer.ggml.model', { type: GgufType.STRING, value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: GgufType.ARRAY, value: { itemType: GgufType.STRING, items: padded<string>(tokens.items, (i) => specials[i], (i) => `\u2581w${i}`) } }],
    ['tokenizer.ggml.scores', { type: GgufType.ARRAY, value: { itemType: GgufType.FLOAT32, items: padded<number>(scores.items, () => 0, (i) => -1000 - i) } }],
    // 3 = control token.
    ['tokenizer.ggml.token_type', { type: GgufType.ARRAY, value: { itemType: GgufType.INT32, items: padded<number>(types.items, () => 3, () => 1) } }],
    ['tokenizer.ggml.unknown_token_id', u32(0)],
    ['tokenizer.ggml.bos_token_id', u32(family?.bos ? tokenId(family.bos) : 1)],
    ['tokenizer.ggml.eos_token_id', u32(family ? tokenId(family.eos) : 2)],
  ]);
  if (family) {
    metadata.set('tokenizer.ggml.add_bos_token', { type: GgufType.BOOL, value: family.addBos });
    metadata.set('tokenizer.chat_template', { type: GgufType.STRING, value: family.template });
  }
  const kv = shape.kvHeads * headDim;
  const m = (name: string, dims: [number, number]): TensorSpec => matrix(name, dims, shape.type, seed);
  // The byte-fallback tokens (<0x00>..<0xFF>) get zero output rows, so a zero logit: far below
  // the top 40 of the random ones, so that sampling never picks one (a grammar that allows
  // nothing else still can). Random bytes make invalid UTF-8, which real models seldom emit and
  // which made llama.cpp's server end its streams with an error in the side-by-side benchmark
  // (its chat parser refuses such text), so that the two servers no longer ran the same load.
  const byteTokens = new Set<number>();
  (tokens.items as unknown[]).forEach((t, i) => {
    if (typeof t === 'string' && /^<0x[0-9A-Fa-f]{2}>$/.test(t) && i < shape.vocab) byteTokens.add(i);
  });
  const tensors: TensorSpec[] = [
    m('token_embd.weight', [shape.dim, shape.vocab]),
    ones('output_norm.weight', shape.dim),
    matrix('output.weight', [shape.dim, shape.vocab], shape.type, seed, byteTokens),
  ];
  for (let l = 0; l < shape.layers; l++) {
    tensors.push(
      ones(`blk.${l}.attn_norm.weight`, shape.dim),
      m(`blk.${l}.attn_q.weight`, [shape.dim, shape.dim]),
      m(`blk.${l}.attn_k.weight`, [shape.dim, kv]),
      m(`blk.${l}.attn_v.weight`, [shape.dim, kv]),
      m(`blk.${l}.attn_output.weight`, [shape.dim, shape.dim]),
      // Qwen2 has biases on q, k and v.
      ...(arch === 'qwen2' ? [zeros(`blk.${l}.attn_q.bias`, shape.dim), zeros(`blk.${l}.attn_k.bias`, kv), zeros(`blk.${l}.attn_v.bias`, kv)] : []),
      ones(`blk.${l}.ffn_norm.weight`, shape.dim),
      m(`blk.${l}.ffn_gate.weight`, [shape.dim, shape.ffn]),
      m(`blk.${l}.ffn_up.weight`, [shape.dim, shape.ffn]),
      m(`blk.${l}.ffn_down.weight`, [shape.ffn, shape.dim]),
    );
  }
  let done = 0;
  const tracked = tensors.map((t) => ({
    ...t,
    fill: (write: (chunk: Buffer) => void) => {
      t.fill(write);
      onProgress?.(++done, tensors.length);
    },
  }));
  return writeGguf(out, metadata, tracked);
}
