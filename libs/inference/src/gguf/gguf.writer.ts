import { closeSync, openSync, writeSync } from 'node:fs';
import { GGUF_ALIGNMENT, GGUF_MAGIC, GgmlType, GgufArray, GgufType, GgufValue, tensorBytes } from './gguf.format';

export interface TensorSpec {
  readonly name: string;
  /** ggml order: ne0 (the contiguous dimension) first. */
  readonly dims: readonly number[];
  readonly type: GgmlType;
  /** Writes exactly tensorBytes(type, elements) bytes through `write`, in chunks. */
  fill(write: (chunk: Buffer) => void): void;
}

/** Metadata value with an explicit type where JavaScript's is ambiguous. */
export type TypedValue = { readonly type: GgufType; readonly value: GgufValue };

function encodeString(s: string): Buffer {
  const bytes = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(bytes.length));
  return Buffer.concat([len, bytes]);
}

function encodeScalar(type: GgufType, v: string | number | bigint | boolean): Buffer {
  const b = Buffer.alloc(8);
  switch (type) {
    case GgufType.STRING: return encodeString(String(v));
    case GgufType.UINT8: b.writeUInt8(Number(v)); return b.subarray(0, 1);
    case GgufType.INT8: b.writeInt8(Number(v)); return b.subarray(0, 1);
    case GgufType.UINT16: b.writeUInt16LE(Number(v)); return b.subarray(0, 2);
    case GgufType.INT16: b.writeInt16LE(Number(v)); return b.subarray(0, 2);
    case GgufType.UINT32: b.writeUInt32LE(Number(v)); return b.subarray(0, 4);
    case GgufType.INT32: b.writeInt32LE(Number(v)); return b.subarray(0, 4);
    case GgufType.FLOAT32: b.writeFloatLE(Number(v)); return b.subarray(0, 4);
    case GgufType.BOOL: b.writeUInt8(v ? 1 : 0); return b.subarray(0, 1);
    case GgufType.UINT64: b.writeBigUInt64LE(BigInt(v)); return b;
    case GgufType.INT64: b.writeBigInt64LE(BigInt(v)); return b;
    case GgufType.FLOAT64: b.writeDoubleLE(Number(v)); return b;
    default: throw new Error(`cannot encode GGUF type ${type}`);
  }
}

function encodeValue({ type, value }: TypedValue): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32LE(type);
  if (type !== GgufType.ARRAY) return Buffer.concat([head, encodeScalar(type, value as string | number | bigint | boolean)]);
  const arr = value as GgufArray;
  const meta = Buffer.alloc(12);
  meta.writeUInt32LE(arr.itemType, 0);
  meta.writeBigUInt64LE(BigInt(arr.items.length), 4);
  return Buffer.concat([head, meta, ...arr.items.map((item) => encodeScalar(arr.itemType, item))]);
}

const pad = (n: number): number => (GGUF_ALIGNMENT - (n % GGUF_ALIGNMENT)) % GGUF_ALIGNMENT;

/** Writes a GGUF v3 file: metadata, tensor infos, then each tensor's data, 32-byte aligned. */
export function writeGguf(path: string, metadata: ReadonlyMap<string, TypedValue>, tensors: readonly TensorSpec[]): number {
  const parts: Buffer[] = [];
  const header = Buffer.alloc(24);
  header.writeUInt32LE(GGUF_MAGIC, 0);
  header.writeUInt32LE(3, 4);
  header.writeBigUInt64LE(BigInt(tensors.length), 8);
  header.writeBigUInt64LE(BigInt(metadata.size), 16);
  parts.push(header);
  for (const [key, value] of metadata) parts.push(encodeString(key), encodeValue(value));
  let offset = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    const elements = t.dims.reduce((a, b) => a * b, 1);
    const size = tensorBytes(t.type, elements);
    sizes.push(size);
    const info = Buffer.alloc(4 + 8 * t.dims.length + 4 + 8);
    let p = info.writeUInt32LE(t.dims.length, 0);
    for (const d of t.dims) p = info.writeBigUInt64LE(BigInt(d), p);
    p = info.writeUInt32LE(t.type, p);
    info.writeBigUInt64LE(BigInt(offset), p);
    parts.push(encodeString(t.name), info);
    offset += size + pad(size);
  }
  const head = Buffer.concat(parts);
  const fd = openSync(path, 'w');
  let written = 0;
  const write = (chunk: Buffer): void => {
    let done = 0;
    while (done < chunk.length) done += writeSync(fd, chunk, done, chunk.length - done);
    written += chunk.length;
  };
  try {
    write(head);
    write(Buffer.alloc(pad(head.length)));
    tensors.forEach((t, i) => {
      const before = written;
      t.fill(write);
      if (written - before !== sizes[i]) {
        throw new Error(`tensor ${t.name}: wrote ${written - before} bytes, expected ${sizes[i]}`);
      }
      write(Buffer.alloc(pad(sizes[i])));
    });
  } finally {
    closeSync(fd);
  }
  return written;
}
