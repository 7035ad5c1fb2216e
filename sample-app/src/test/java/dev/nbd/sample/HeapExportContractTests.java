package dev.nbd.sample;

import dev.nbd.backend.ExportBackend;
import dev.nbd.testkit.ExportBackendContractTests;

/** The sample's backend, the one users copy, meets the backend contract. */
class HeapExportContractTests extends ExportBackendContractTests {

	@Override
	protected ExportBackend createBackend() {
		return new HeapExport("contract-heap", 8 * 1024 * 1024);
	}

}
