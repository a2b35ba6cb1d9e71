"""The Avro wire contract of the Provisioning Service: the `.avsc` files and their codec."""
