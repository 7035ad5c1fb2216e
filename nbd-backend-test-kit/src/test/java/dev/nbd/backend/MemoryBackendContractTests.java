package dev.nbd.backend;

import dev.nbd.testkit.ExportBackendContractTests;

/** The memory export meets the backend contract. */
class MemoryBackendContractTests extends ExportBackendContractTests {

	@Override
	protected ExportBackend createBackend() {
		return new MemoryBackend("contract-memory", 16 * 1024 * 1024);
	}

}
