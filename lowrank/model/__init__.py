"""The model side: record and price a model's layers, its SVD bases, the masked view, the
bridge to a solver problem, plans, surgery, the network loss, fine-tuning."""
