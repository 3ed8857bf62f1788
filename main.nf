#!/usr/bin/env nextflow
/*
 * bonemet: single-cell RNA-seq pipeline for bone-metastasis research.
 *
 *   nextflow run . -profile test --outdir results/nf-test           (generated data, CPU)
 *   nextflow run . --input samplesheet.csv --outdir results/x       (your samples)
 *   nextflow run . --geo GSE143791 --outdir results/GSE143791       (a GEO series)
 *
 * Every process runs one `bonemet` stage command; see README.md (Nextflow).
 */
nextflow.enable.dsl = 2

include { BONEMET         } from './pipeline/workflows/bonemet'
include { readSamplesheet } from './pipeline/workflows/samplesheet'

def usage() {
    return """
    Usage:
      nextflow run . --input samplesheet.csv --outdir DIR [-profile docker|singularity|conda,gpu,slurm] [-resume]
      nextflow run . --geo GSExxxxx [--geo_samples GSM1,GSM2] --outdir DIR
      nextflow run . -profile test --outdir DIR

    Input (one of):
      --input        CSV with columns sample,path[,format,batch,condition,species]
      --geo          GEO series accession (downloads with `bonemet fetch-geo`)
      -profile test  generated data (`bonemet simulate`)
    Options:
      --outdir       output folder (required)
      --config       bonemet run config (YAML) over configs/default.yaml
      --seed, --max_epochs, --accelerator auto|cpu|gpu, --species auto|human|mouse
      --set          extra config overrides 'section.key=value;section.key=value'
      --save_intermediates, --skip_report, --publish_dir_mode
    """.stripIndent()
}

/*
 * The `bonemet config --set` overrides made from pipeline parameters. Only parameters the
 * user set are passed: every default lives in bonemet's configs/default.yaml.
 */
List configOverrides() {
    def sets = []
    if (params.seed != null)        sets << "seed=${params.seed}"
    if (params.species)             sets << "input.species=${params.species}"
    if (params.max_epochs != null)  sets << "integrate.max_epochs=${params.max_epochs}"
    if (params.accelerator)         sets << "integrate.accelerator=${params.accelerator}"
    if (params.set) {
        def extra = params.set instanceof List ? params.set : params.set.toString().tokenize(';')
        sets.addAll(extra.collect { it.toString().trim() }.findAll { it })
    }
    sets.each { s ->
        if (!(s ==~ /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*=[^'\r\n]*$/)) {
            error("--set '${s}': expected section.key=value (several separated by ';'), without single quotes")
        }
    }
    return sets
}

workflow {
    if (params.help) {
        log.info usage()
        return
    }
    if (!params.outdir) {
        error("--outdir is required: the folder where bonemet.h5ad, report.html, tables/, figures/ and pipeline_info/ go${usage()}")
    }
    if (params.input && params.geo) {
        error("give --input (a samplesheet) or --geo (a GEO accession), not both")
    }
    if (!params.input && !params.geo && !params.simulate) {
        error("no input: give --input samplesheet.csv or --geo GSExxxxx (or use -profile test)${usage()}")
    }
    if (params.geo && !(params.geo.toString() ==~ /^GSE[0-9]+$/)) {
        error("--geo '${params.geo}' is not a GEO series accession (GSE followed by digits)")
    }
    if (params.geo_samples && !(params.geo_samples.toString() ==~ /^GSM[0-9]+(,GSM[0-9]+)*$/)) {
        error("--geo_samples '${params.geo_samples}': expected GSM ids separated by commas, e.g. GSM1,GSM2")
    }
    if (params.accelerator && !(params.accelerator in ['auto', 'cpu', 'gpu'])) {
        error("--accelerator '${params.accelerator}' is not one of auto, cpu, gpu")
    }
    if (params.species && !(params.species in ['auto', 'human', 'mouse'])) {
        error("--species '${params.species}' is not one of auto, human, mouse")
    }

    // Validated here, before any task is submitted: a bad row stops the run at once.
    def samples     = params.input ? readSamplesheet(params.input) : []
    def base_config = params.config ? file(params.config, checkIfExists: true) : []
    def overrides   = configOverrides()

    BONEMET(samples, base_config, overrides)
}

workflow.onComplete {
    if (workflow.success) {
        log.info "bonemet: done. Results in ${params.outdir}/ (bonemet.h5ad, report.html, tables/, figures/, samples/, pipeline_info/)"
    } else {
        log.error "bonemet: failed. Fix the error above and run the same command with -resume to continue from the last completed tasks."
    }
}
