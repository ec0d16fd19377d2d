// Model-backed tests load a model and generate; give them room on a 2-core CI machine.
jest.setTimeout(60_000);
