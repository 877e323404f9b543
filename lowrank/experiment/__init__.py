"""The experiment side: sweeps over models x budgets x methods, one run as a pure function,
the SQLite results store and the executors that run sweeps."""
