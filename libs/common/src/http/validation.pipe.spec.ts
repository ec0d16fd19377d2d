import 'reflect-metadata';
import { ValidationPipe } from '@nestjs/common';
import { Type } from 'class-transformer';
import { IsInt, IsObject, IsOptional, IsString, Max, MaxLength, Min, ValidateNested } from 'class-validator';
import express from 'express';
import request from 'supertest';
import { CommonException } from '../errors/common.exception';
import { jsonBody } from './json-body.middleware';
import { createValidationPipe, FreeFormFields } from './validation.pipe';

class InnerDto {
  @IsString()
  name!: string;
}

class OuterDto {
  @IsString()
  prompt!: string;

  @IsOptional()
  @IsInt()
  @Max(10)
  n: number = 1;

  @IsOptional()
  @ValidateNested()
  @Type(() => InnerDto)
  inner?: InnerDto;
}

/**
 * Runs the pipe on bodies read by the real reader (which is what lets the pipe remember them)
 * and hands back what it produced, or the error it threw.
 */
class SchemaDto {
  @IsString()
  prompt!: string;

  @IsObject()
  schema!: Record<string, unknown>;
}

function harness(metatype: new () => object = OuterDto): { app: express.Express; results: unknown[] } {
  const pipe = createValidationPipe();
  const results: unknown[] = [];
  const app = express();
  app.use(jsonBody(4096));
  app.post('/', (req, res) => {
    pipe.transform(req.body, { type: 'body', metatype, data: undefined }).then(
      (dto) => {
        results.push(dto);
        res.json({ ok: true });
      },
      (err: unknown) => {
        results.push(err);
        res.status(400).json({ ok: false });
      },
    );
  });
  return { app, results };
}

describe('createValidationPipe (remembering validated bodies)', () => {
  it('gives a repeated body an equal DTO of the same classes, a fresh copy each time', async () => {
    const validate = jest.spyOn(ValidationPipe.prototype as unknown as { validate: () => unknown }, 'validate');
    const { app, results } = harness();
    const body = JSON.stringify({ prompt: 'hi', inner: { name: 'x' }, extra: 'stripped' });
    for (let i = 0; i < 3; i++) await request(app).post('/').set('Content-Type', 'application/json').send(body).expect(200);
    // class-validator ran for the first of the three only.
    expect(validate).toHaveBeenCalledTimes(1);
    validate.mockRestore();
    const [first, second, third] = results as OuterDto[];
    for (const dto of [first, second, third]) {
      expect(dto).toBeInstanceOf(OuterDto);
      expect(dto.inner).toBeInstanceOf(InnerDto);
      expect({ ...dto, inner: { ...dto.inner } }).toEqual({ prompt: 'hi', n: 1, inner: { name: 'x' } });
    }
    // A consumer that changes its DTO changes nobody else's.
    (second.inner as InnerDto).name = 'changed';
    expect(second).not.toBe(third);
    expect(third.inner?.name).toBe('x');
    await request(app).post('/').set('Content-Type', 'application/json').send(body).expect(200);
    expect((results[3] as OuterDto).inner?.name).toBe('x');
  });

  it('copies a free-form "__proto__" key as data, never as a prototype', async () => {
    const { app, results } = harness(SchemaDto);
    const body = '{"prompt":"p","schema":{"__proto__":{"polluted":true},"a":1}}';
    for (let i = 0; i < 2; i++) await request(app).post('/').set('Content-Type', 'application/json').send(body).expect(200);
    const [first, copy] = results as SchemaDto[];
    expect(Object.getPrototypeOf(copy.schema)).toBe(Object.getPrototypeOf(first.schema));
    expect(Object.getOwnPropertyNames(copy.schema)).toEqual(Object.getOwnPropertyNames(first.schema));
    expect((copy.schema as { polluted?: unknown }).polluted).toBeUndefined();
    expect(({} as { polluted?: unknown }).polluted).toBeUndefined();
  });

  it('refuses an invalid body every time (refusals are not remembered)', async () => {
    const { app, results } = harness();
    const body = JSON.stringify({ prompt: 'hi', n: 11 });
    await request(app).post('/').set('Content-Type', 'application/json').send(body).expect(400);
    await request(app).post('/').set('Content-Type', 'application/json').send(body).expect(400);
    expect(results).toHaveLength(2);
    for (const err of results) expect(err).toBeInstanceOf(CommonException);
  });

  it('validates bodies it has no source text for as before', async () => {
    const pipe = createValidationPipe();
    const dto = (await pipe.transform({ prompt: 'p', n: 2 }, { type: 'body', metatype: OuterDto, data: undefined })) as OuterDto;
    expect(dto).toBeInstanceOf(OuterDto);
    expect(dto.n).toBe(2);
    await expect(pipe.transform({ prompt: 5 }, { type: 'body', metatype: OuterDto, data: undefined })).rejects.toBeInstanceOf(CommonException);
  });
});

describe('validation messages (issue 17)', () => {
  class LimitsDto {
    @IsOptional()
    @IsInt()
    @Min(1)
    @Max(2048)
    max_tokens?: number;

    @IsOptional()
    @IsString()
    @MaxLength(3)
    model?: string;
  }

  const messages = async (body: object): Promise<{ field: string; message: string }[]> => {
    try {
      await createValidationPipe().transform(body, { type: 'body', metatype: LimitsDto, data: undefined });
      return [];
    } catch (err) {
      return (err as CommonException).toEnvelope().error.details ?? [];
    }
  };

  it('a value of the wrong type is reported as such, not by a bound it cannot be compared with', async () => {
    expect(await messages({ max_tokens: '5' })).toEqual([{ field: 'max_tokens', message: 'max_tokens must be an integer number' }]);
    expect(await messages({ model: 5 })).toEqual([{ field: 'model', message: 'model must be a string' }]);
  });

  it('a value of the right type reports the first bound it breaks, once', async () => {
    expect(await messages({ max_tokens: 4096 })).toEqual([{ field: 'max_tokens', message: 'max_tokens must not be greater than 2048' }]);
    expect(await messages({ max_tokens: 0 })).toEqual([{ field: 'max_tokens', message: 'max_tokens must not be less than 1' }]);
    expect(await messages({ max_tokens: 1.5 })).toEqual([{ field: 'max_tokens', message: 'max_tokens must be an integer number' }]);
  });
});

describe('FreeFormFields', () => {
  class FnDto {
    @IsString()
    name!: string;

    @IsOptional()
    @IsObject()
    parameters?: Record<string, unknown>;
  }

  class ToolDto {
    @ValidateNested()
    @Type(() => FnDto)
    function!: FnDto;
  }

  @FreeFormFields('schema', 'tools.*.function.parameters')
  class BodyDto {
    @IsObject()
    schema!: Record<string, unknown>;

    @IsOptional()
    @ValidateNested({ each: true })
    @Type(() => ToolDto)
    tools?: ToolDto[];
  }

  it('hands free-form objects over as parsed (not copied), still validated as objects, other fields as usual', async () => {
    const schema = { type: 'object', properties: { a: { enum: Array.from({ length: 1000 }, (_, i) => `v${i}`) } }, __proto__: null };
    const params = [{ type: 'object' }, { type: 'object', properties: { x: { type: 'string' } } }];
    const body = { schema, tools: params.map((parameters, i) => ({ function: { name: `f${i}`, parameters, extra: 1 } })) };
    const dto = (await createValidationPipe().transform(body, { type: 'body', metatype: BodyDto, data: undefined })) as BodyDto;
    expect(dto).toBeInstanceOf(BodyDto);
    expect(dto.schema).toBe(schema);
    expect(dto.tools?.[0]).toBeInstanceOf(ToolDto);
    expect(dto.tools?.map((t) => t.function.parameters)).toEqual(params);
    expect(dto.tools?.[1].function.parameters).toBe(params[1]);
    // Unknown fields around them are still stripped; the body keeps its objects too.
    expect(dto.tools?.[0].function).not.toHaveProperty('extra');
    expect(body.schema).toBe(schema);
  });

  it('a free-form field of the wrong type is refused as before', async () => {
    await expect(createValidationPipe().transform({ schema: 'nope' }, { type: 'body', metatype: BodyDto, data: undefined })).rejects.toBeInstanceOf(CommonException);
    await expect(createValidationPipe().transform({ schema: [1] }, { type: 'body', metatype: BodyDto, data: undefined })).rejects.toBeInstanceOf(CommonException);
  });
});
