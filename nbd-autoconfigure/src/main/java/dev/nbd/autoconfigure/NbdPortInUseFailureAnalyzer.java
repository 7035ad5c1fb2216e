package dev.nbd.autoconfigure;

import org.springframework.boot.diagnostics.AbstractFailureAnalyzer;
import org.springframework.boot.diagnostics.FailureAnalysis;

import dev.nbd.server.NbdServerException;

/** Explains a failed start when the NBD port is taken. */
class NbdPortInUseFailureAnalyzer extends AbstractFailureAnalyzer<NbdServerException> {

	@Override
	protected FailureAnalysis analyze(Throwable rootFailure, NbdServerException cause) {
		return new FailureAnalysis(cause.getMessage() + ".",
				"Stop the process using port " + cause.port() + " (another NBD server such as nbdkit or qemu-nbd?),"
						+ " or set nbd.server.port to another port (0 picks a free one).",
				cause);
	}

}
