/** GGUF v3 value types (ggml/include/gguf.h). */
export enum GgufType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** ggml tensor types this project writes. */
export enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q8_0 = 8,
}

export const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
export const GGUF_ALIGNMENT = 32;
export const Q8_0_BLOCK = 32;
/** Bytes of one Q8_0 block: an f16 scale and 32 int8 values. */
export const Q8_0_BLOCK_BYTES = 34;

export type GgufValue = string | number | bigint | boolean | GgufArray;
export interface GgufArray {
  readonly itemType: GgufType;
  readonly items: readonly (string | number | boolean)[];
}

export function tensorBytes(type: GgmlType, elements: number): number {
  switch (type) {
    case GgmlType.F32:
      return elements * 4;
    case GgmlType.F16:
      return elements * 2;
    case GgmlType.Q8_0:
      if (elements % Q8_0_BLOCK !== 0) throw new RangeError(`Q8_0 needs a multiple of 32 elements, got ${elements}`);
      return (elements / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES;
  }
}
