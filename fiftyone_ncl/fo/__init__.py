"""The FiftyOne side: reading pairs and embeddings from a collection,
writing fields transactionally, recording runs like brain runs."""
