package dev.nbd.autoconfigure;

import org.springframework.boot.diagnostics.AbstractFailureAnalyzer;
import org.springframework.boot.diagnostics.FailureAnalysis;

/** Explains a startup failure caused by a mistake in the NBD configuration. */
class NbdConfigurationFailureAnalyzer extends AbstractFailureAnalyzer<NbdConfigurationException> {

	@Override
	protected FailureAnalysis analyze(Throwable rootFailure, NbdConfigurationException cause) {
		return new FailureAnalysis(cause.getMessage(), cause.getAction(), cause);
	}

}
