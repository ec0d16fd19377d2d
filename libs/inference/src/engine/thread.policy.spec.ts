import { threadsForStep } from './thread.policy';

describe('threadsForStep', () => {
  it('uses every thread of the pool for one sequence and for many', () => {
    expect(threadsForStep(2, 1, 1)).toBe(2);
    expect(threadsForStep(2, 8, 8)).toBe(2);
    expect(threadsForStep(16, 3, 400)).toBe(16);
  });

  it('never returns less than one thread', () => {
    expect(threadsForStep(1, 8, 8)).toBe(1);
    expect(threadsForStep(0, 1, 1)).toBe(1);
  });
});
