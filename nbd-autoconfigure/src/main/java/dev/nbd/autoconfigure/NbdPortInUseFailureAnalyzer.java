package dev.nbd.autoconfigure;

import org.springframework.boot.diagnostics.AbstractFailureAnalyzer;
import org.springframework.boot.diagnostics.FailureAnalysis;

import dev.nbd.server.NbdServerException;

/** Explains a failed start when the NBD listener cannot bind (most often: its port is taken). */
class NbdPortInUseFailureAnalyzer extends AbstractFailureAnalyzer<NbdServerException> {

	@Override
	protected FailureAnalysis analyze(Throwable rootFailure, NbdServerException cause) {
		if (cause.port() < 0) {
			return new FailureAnalysis(cause.getMessage() + ".",
					"Set nbd.server.unix-socket to a free path in a writable directory, or stop the server using it;"
							+ " with nbd.server.port=-1 it is the only listener.",
					cause);
		}
		if (!String.valueOf(cause.getMessage()).contains("already in use")) {
			// Not a taken port (an address of another host, a privileged port...): say so.
			return new FailureAnalysis(cause.getMessage() + ".",
					"Check that nbd.server.address is an address of this host and that this process may bind"
							+ " nbd.server.port (ports below 1024 need privileges; 0 picks a free one).",
					cause);
		}
		return new FailureAnalysis(cause.getMessage() + ".",
				"Stop the process using port " + cause.port() + " (another NBD server such as nbdkit or qemu-nbd?),"
						+ " or set nbd.server.port to another port (0 picks a free one).",
				cause);
	}

}
