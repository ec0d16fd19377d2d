import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsBoolean, IsInt, IsNumber, IsObject, IsOptional, IsString, Matches, Max, MaxLength, Min, registerDecorator } from 'class-validator';
import { COLLECTION_NAME_PATTERN, DEFAULT_MIN_SCORE, DEFAULT_TOP_K } from '@app/retrieval';
import type { Metadata } from '@app/retrieval';

const FINITE = { allowNaN: false, allowInfinity: false };
const NAME_MESSAGE = "collection names are 1-64 characters: lowercase letters, digits, '_' and '-', starting with a letter or digit";
/** Most chunks one query or generation may retrieve. */
export const MAX_TOP_K = 32;
/** With `rerank`, candidates searched per chunk kept. */
export const RERANK_CANDIDATES = 4;

/** Flat objects of string, number and boolean values, with at most 32 short keys. */
function IsFlatMetadata(): PropertyDecorator {
  return (object: object, propertyName: string | symbol) =>
    registerDecorator({
      name: 'isFlatMetadata',
      target: object.constructor,
      propertyName: propertyName as string,
      options: { message: `${String(propertyName)} must be an object of at most 32 string, number or boolean values with keys of 1-64 word characters` },
      validator: {
        validate: (value: unknown) =>
          typeof value === 'object' &&
          value !== null &&
          !Array.isArray(value) &&
          Object.keys(value).length <= 32 &&
          Object.entries(value).every(
            ([k, v]) =>
              /^\w{1,64}$/.test(k) &&
              (typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v)) || (typeof v === 'string' && v.length <= 1024)),
          ),
      },
    });
}

export class CreateCollectionDto {
  @ApiProperty({ pattern: COLLECTION_NAME_PATTERN.source })
  @IsString()
  @Matches(COLLECTION_NAME_PATTERN, { message: NAME_MESSAGE })
  name!: string;

  @ApiPropertyOptional({ default: false, description: 'Every key may read (query, ground generations on) it; only its owner and admin keys change it' })
  @IsOptional()
  @IsBoolean()
  shared?: boolean;
}

/** JSON form of an upload; a `text/plain` body becomes `{text: body, id: ?id}`. */
export class AddDocumentDto {
  @ApiProperty({ description: 'The document; split into chunks of RETRIEVAL_CHUNK_TOKENS tokens' })
  @IsString()
  text!: string;

  @ApiPropertyOptional({ description: 'Stable id; adding the same id again replaces the document. Default: generated' })
  @IsOptional()
  @IsString()
  @Matches(/^[\w.:@-]{1,128}$/, { message: 'id must be 1-128 letters, digits or . : @ _ -' })
  id?: string;

  @ApiPropertyOptional({ description: 'Flat metadata stored with every chunk; query filters match it' })
  @IsOptional()
  @IsFlatMetadata()
  metadata?: Metadata;
}

/** Fields shared by a query and a generation's `retrieval` option. */
export class RetrievalParamsDto {
  @ApiPropertyOptional({ minimum: 1, maximum: MAX_TOP_K, default: DEFAULT_TOP_K })
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(MAX_TOP_K)
  top_k?: number;

  @ApiPropertyOptional({ minimum: -1, maximum: 1, default: DEFAULT_MIN_SCORE, description: 'Cosine similarity below which a chunk is dropped' })
  @IsOptional()
  @IsNumber(FINITE)
  @Min(-1)
  @Max(1)
  min_score?: number;

  @ApiPropertyOptional({ description: 'Equality on metadata values; `document_id` matches the document id' })
  @IsOptional()
  @IsObject()
  @IsFlatMetadata()
  filter?: Metadata;

  @ApiPropertyOptional({ default: false, description: `Rerank: search ${RERANK_CANDIDATES}× top_k candidates (at most ${MAX_TOP_K}), keep the top_k the reranker (RERANK_MODEL_PATH) scores best` })
  @IsOptional()
  @IsBoolean()
  rerank?: boolean;
}

export class QueryDto extends RetrievalParamsDto {
  @ApiProperty()
  @IsString()
  @MaxLength(20_000)
  query!: string;
}

/** The `retrieval` option of /v1/generate, /v1/completions and /v1/chat/completions. */
export class RetrievalOptionDto extends RetrievalParamsDto {
  @ApiProperty()
  @IsString()
  @Matches(COLLECTION_NAME_PATTERN, { message: NAME_MESSAGE })
  collection!: string;
}
